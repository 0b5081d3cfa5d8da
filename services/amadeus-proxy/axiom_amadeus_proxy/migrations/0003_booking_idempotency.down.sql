DROP INDEX IF EXISTS ix_agent_transactions_booking_state;
ALTER TABLE agent_transactions DROP COLUMN updated_at;
ALTER TABLE agent_transactions DROP COLUMN response_body;
ALTER TABLE agent_transactions DROP COLUMN response_status;
ALTER TABLE agent_transactions DROP COLUMN claim_token;
ALTER TABLE agent_transactions DROP COLUMN booking_state;
ALTER TABLE agent_transactions DROP COLUMN request_hash;
