DROP TABLE outbox;
DROP TABLE idempotency_keys;
DROP INDEX ux_payments_expected_signature;
ALTER TABLE payments DROP COLUMN expected_signature;
