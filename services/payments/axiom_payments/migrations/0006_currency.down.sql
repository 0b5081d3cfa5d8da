-- Back to SOL only: token payments would read as lamports, so going down refuses while any
-- exists (the CHECK below fails the migration's transaction).
CREATE TEMP TABLE _no_token_payments (n INTEGER CHECK (n = 0));
INSERT INTO _no_token_payments SELECT count(*) FROM payments WHERE currency <> 'SOL';
DROP TABLE _no_token_payments;
ALTER TABLE payments DROP COLUMN decimals;
ALTER TABLE payments DROP COLUMN mint;
ALTER TABLE payments DROP COLUMN currency;
