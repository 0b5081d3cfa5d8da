-- Payment creation: the signature a merchant-co-signed transaction request will carry, the
-- Idempotency-Key records, and the outbox that makes every status event as durable as the
-- change it announces (written in the same transaction, published afterwards).
ALTER TABLE payments ADD COLUMN expected_signature TEXT;
CREATE UNIQUE INDEX ux_payments_expected_signature ON payments (expected_signature);

CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    payment_id INTEGER NOT NULL REFERENCES payments (id),
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    msg_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    correlation_id TEXT,
    created_at TEXT NOT NULL
);
