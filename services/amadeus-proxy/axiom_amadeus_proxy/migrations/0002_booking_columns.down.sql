DROP INDEX IF EXISTS ux_agent_transactions_idempotency_key;
ALTER TABLE agent_transactions DROP COLUMN external_booking_ref;
ALTER TABLE agent_transactions DROP COLUMN payment_provider;
ALTER TABLE agent_transactions DROP COLUMN idempotency_key;
