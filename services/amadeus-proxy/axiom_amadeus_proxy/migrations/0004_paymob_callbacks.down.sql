-- The callbacks table is ours (the facts also stay in the WEBHOOKS stream for 7 days); the
-- legacy table only loses the columns 0004 added.
DROP INDEX IF EXISTS ix_paymob_callbacks_flag;
DROP INDEX IF EXISTS ix_paymob_callbacks_order_id;
DROP TABLE IF EXISTS paymob_callbacks;
DROP INDEX IF EXISTS ux_agent_transactions_paymob_order_id;
ALTER TABLE agent_transactions DROP COLUMN payment_updated_at;
ALTER TABLE agent_transactions DROP COLUMN paymob_transaction_id;
ALTER TABLE agent_transactions DROP COLUMN payment_status;
ALTER TABLE agent_transactions DROP COLUMN paymob_order_id;
