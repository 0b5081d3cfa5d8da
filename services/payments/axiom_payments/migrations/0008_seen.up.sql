-- A transaction seen at `confirmed` carrying the payment's reference (display only: it never
-- decides anything), and what became of it when it did not pay.
ALTER TABLE payments ADD COLUMN seen_signature TEXT;
ALTER TABLE payments ADD COLUMN seen_at TEXT;
ALTER TABLE payments ADD COLUMN seen_outcome TEXT
    CHECK (seen_outcome IS NULL OR seen_outcome IN ('not_finalized', 'not_a_receipt', 'counted'));
