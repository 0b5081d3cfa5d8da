ALTER TABLE payments DROP COLUMN seen_outcome;
ALTER TABLE payments DROP COLUMN seen_at;
ALTER TABLE payments DROP COLUMN seen_signature;
