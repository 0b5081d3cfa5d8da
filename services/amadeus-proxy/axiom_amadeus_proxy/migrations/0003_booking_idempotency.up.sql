-- Stripe-style idempotency for flight bookings (see axiom_amadeus_proxy.booking): the claim's
-- state, the fingerprint of the request, the owner of the claim, and the answer to replay.
-- Legacy rows keep NULL in all of them.
ALTER TABLE agent_transactions ADD COLUMN request_hash TEXT;
ALTER TABLE agent_transactions ADD COLUMN booking_state TEXT CHECK (
    booking_state IS NULL
    OR booking_state IN ('in_flight', 'booking_sent', 'completed', 'failed', 'outcome_unknown')
);
ALTER TABLE agent_transactions ADD COLUMN claim_token TEXT;
ALTER TABLE agent_transactions ADD COLUMN response_status INTEGER;
ALTER TABLE agent_transactions ADD COLUMN response_body TEXT;
ALTER TABLE agent_transactions ADD COLUMN updated_at TEXT;
-- Operators (and the stale-claim check) look bookings up by state and age.
CREATE INDEX IF NOT EXISTS ix_agent_transactions_booking_state
    ON agent_transactions (booking_state, updated_at);
