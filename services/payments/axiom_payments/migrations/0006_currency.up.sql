-- Payments in SPL tokens (USDC first). A payment is priced and paid in one currency; its
-- amount columns (amount_lamports, received_lamports, refund_due_lamports, and the receipts'
-- and observations' amount_lamports) hold the smallest unit of that currency: lamports for
-- SOL, the mint's base units for a token. The columns keep their first names (renaming them
-- would rewrite every table for nothing); the API names both (docs/usdc-and-refunds.md).
ALTER TABLE payments ADD COLUMN currency TEXT NOT NULL DEFAULT 'SOL'
    CHECK (currency IN ('SOL', 'USDC'));
-- The token's mint; NULL exactly for SOL.
ALTER TABLE payments ADD COLUMN mint TEXT
    CHECK ((currency = 'SOL') = (mint IS NULL));
ALTER TABLE payments ADD COLUMN decimals INTEGER NOT NULL DEFAULT 9
    CHECK (decimals BETWEEN 0 AND 18);
