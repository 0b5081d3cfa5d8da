-- Back to one counted transaction per payment: a failed payment's receipt is its signature
-- again (as before this migration); amounts stay in received_lamports.
UPDATE payments SET tx_signature = (
        SELECT r.signature FROM receipts r WHERE r.payment_id = payments.id
        ORDER BY r.slot, r.position LIMIT 1)
WHERE status = 'failed' AND tx_signature IS NULL
    AND EXISTS (SELECT 1 FROM receipts r WHERE r.payment_id = payments.id);
DROP INDEX idx_payments_refund_due;
DROP INDEX idx_payments_status_scan;
ALTER TABLE payments DROP COLUMN scan_cursor;
ALTER TABLE payments DROP COLUMN scanned_at;
ALTER TABLE payments DROP COLUMN scan_requested_at;
ALTER TABLE payments DROP COLUMN refund_due_lamports;
DROP TABLE observations;
DROP TABLE receipts;
