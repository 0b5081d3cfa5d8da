-- Verification: the latest check that changed nothing (e.g. a transaction without our
-- reference), kept for people and support; the sweeper and reconcile loop scan by status
-- and expiry.
ALTER TABLE payments ADD COLUMN last_check TEXT;
ALTER TABLE payments ADD COLUMN last_checked_at TEXT;
CREATE INDEX idx_payments_status_expires_at ON payments (status, expires_at);
