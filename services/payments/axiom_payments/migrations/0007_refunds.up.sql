-- Refunds as first-class, audited objects. A refund *request* is a Solana Pay transfer
-- request from the merchant (or, in hot-wallet mode, the refund wallet) to the account that
-- paid, with its own fresh reference; the same receipts machinery sees it land at
-- `finalized`. Amounts are in the payment's currency's smallest unit.
CREATE TABLE refunds (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE CHECK (length(public_id) >= 16),
    payment_id INTEGER NOT NULL REFERENCES payments (id),
    amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
    -- Who gets it (the payer of a receipt) and who sends it (merchant or refund wallet).
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    reference_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('requested', 'refunded', 'expired')),
    -- 'wallet': signed by the merchant's own wallet; 'hot_wallet': signed by the service.
    mode TEXT NOT NULL CHECK (mode IN ('wallet', 'hot_wallet')),
    -- The transaction that landed it: one transaction refunds one refund, once.
    signature TEXT UNIQUE,
    -- Hot-wallet mode: the signature of the transaction the service signed, known before it
    -- is sent (a crash between the two leaves it here).
    expected_signature TEXT UNIQUE,
    requested_by TEXT NOT NULL,
    reason TEXT,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    refunded_at TEXT,
    slot INTEGER,
    CHECK (status <> 'refunded' OR signature IS NOT NULL)
);
CREATE INDEX idx_refunds_payment_id ON refunds (payment_id);
CREATE INDEX idx_refunds_status ON refunds (status, expires_at);
-- At most one open request per payment: a second cannot be asked while one may still land.
CREATE UNIQUE INDEX idx_refunds_one_open ON refunds (payment_id) WHERE status = 'requested';

-- What has been given back, and where the payment's refund stands:
-- NULL (nothing owed), refund_due, refund_requested, refunded.
ALTER TABLE payments ADD COLUMN refunded_lamports INTEGER NOT NULL DEFAULT 0
    CHECK (typeof(refunded_lamports) = 'integer' AND refunded_lamports >= 0);
ALTER TABLE payments ADD COLUMN refund_status TEXT
    CHECK (refund_status IS NULL
           OR refund_status IN ('refund_due', 'refund_requested', 'refunded'));
UPDATE payments SET refund_status = 'refund_due' WHERE refund_due_lamports > 0;

-- The hot wallet's daily cap, checked in the same batch as the refund it admits (atomic
-- across replicas): a row with over = 1 fails the batch. Always empty between batches.
CREATE TABLE refund_cap_checks (over INTEGER NOT NULL CHECK (over = 0));
