-- Receipts, not verdicts (DESIGN.md "Receipts"): every transaction that paid a payment is
-- stored once (its signature UNIQUE across all payments, so one transaction can never count
-- twice), and the status follows from the receipts in chain order (slot, then position).
-- A transaction that carries a reference but is not a receipt is an observation: recorded
-- with its reason, it never moves a status.
CREATE TABLE receipts (
    id INTEGER PRIMARY KEY,
    payment_id INTEGER NOT NULL REFERENCES payments (id),
    signature TEXT NOT NULL UNIQUE,
    slot INTEGER NOT NULL CHECK (slot >= 0),
    position INTEGER NOT NULL CHECK (position >= 0),
    amount_lamports INTEGER NOT NULL
        CHECK (typeof(amount_lamports) = 'integer' AND amount_lamports > 0),
    payer TEXT,
    block_time TEXT NOT NULL,
    source TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX idx_receipts_payment_id ON receipts (payment_id);

CREATE TABLE observations (
    id INTEGER PRIMARY KEY,
    payment_id INTEGER NOT NULL REFERENCES payments (id),
    signature TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('transaction_failed', 'no_credit',
        'predates_payment', 'ambiguous', 'signature_already_counted')),
    slot INTEGER,
    amount_lamports INTEGER CHECK (amount_lamports IS NULL OR amount_lamports >= 0),
    payer TEXT,
    source TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    UNIQUE (payment_id, signature)
);
CREATE INDEX idx_observations_signature ON observations (signature);

-- Money to give back (beyond the price, or all of it when the payment was not completed).
ALTER TABLE payments ADD COLUMN refund_due_lamports INTEGER NOT NULL DEFAULT 0
    CHECK (typeof(refund_due_lamports) = 'integer' AND refund_due_lamports >= 0);
-- The reconcile loop's bookkeeping: when a scan was last asked for and last completed, and
-- the newest signature the last complete scan saw (the next one reads only what is newer).
ALTER TABLE payments ADD COLUMN scan_requested_at TEXT;
ALTER TABLE payments ADD COLUMN scanned_at TEXT;
ALTER TABLE payments ADD COLUMN scan_cursor TEXT;
CREATE INDEX idx_payments_status_scan ON payments (status, scan_requested_at);
CREATE INDEX idx_payments_refund_due ON payments (refund_due_lamports)
    WHERE refund_due_lamports > 0;

-- Payments verified, provisioned or failed for a short payment before this migration get
-- their receipt from the transaction that was counted (its slot and position are unknown
-- here: 0 keeps it first in chain order, as it was the one that decided).
INSERT INTO receipts (payment_id, signature, slot, position, amount_lamports, payer, block_time,
    source, recorded_at)
SELECT id, tx_signature, 0, 0, received_lamports, NULL, COALESCE(finalized_at, updated_at),
    'migration', updated_at
FROM payments
WHERE tx_signature IS NOT NULL AND received_lamports IS NOT NULL AND received_lamports > 0;

UPDATE payments SET refund_due_lamports = CASE
        WHEN status IN ('verified', 'provisioned') THEN max(received_lamports - amount_lamports, 0)
        ELSE received_lamports
    END
WHERE received_lamports IS NOT NULL AND received_lamports > 0;

-- A failed payment's counted transaction was "the one that paid"; under receipts it is just a
-- receipt (money owed back), so `tx_signature` stays only on completed payments.
UPDATE payments SET tx_signature = NULL WHERE status NOT IN ('verified', 'provisioned');
UPDATE payments SET received_lamports = 0 WHERE received_lamports IS NULL;
