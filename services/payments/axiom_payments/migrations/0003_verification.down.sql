DROP INDEX idx_payments_status_expires_at;
ALTER TABLE payments DROP COLUMN last_checked_at;
ALTER TABLE payments DROP COLUMN last_check;
