-- Back to refunds due only: what was refunded is owed again in the columns that remain
-- (refund_due_lamports), so nothing is lost from sight; the refund rows go.
UPDATE payments SET refund_due_lamports = refund_due_lamports + refunded_lamports;
ALTER TABLE payments DROP COLUMN refund_status;
ALTER TABLE payments DROP COLUMN refunded_lamports;
DROP TABLE refund_cap_checks;
DROP INDEX idx_refunds_one_open;
DROP INDEX idx_refunds_status;
DROP INDEX idx_refunds_payment_id;
DROP TABLE refunds;
