-- The plan's three columns. SQLite cannot add a UNIQUE column, so the uniqueness of
-- idempotency_key is a unique index (NULLs, i.e. the legacy rows, do not collide).
ALTER TABLE agent_transactions ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS ux_agent_transactions_idempotency_key
    ON agent_transactions (idempotency_key);
ALTER TABLE agent_transactions ADD COLUMN payment_provider TEXT NOT NULL DEFAULT 'solana';
ALTER TABLE agent_transactions ADD COLUMN external_booking_ref TEXT;
