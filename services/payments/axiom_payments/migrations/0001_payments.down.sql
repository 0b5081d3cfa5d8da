DROP TABLE entitlements;
DROP TABLE payments;
