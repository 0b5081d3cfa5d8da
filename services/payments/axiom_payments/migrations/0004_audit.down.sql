DROP TABLE operator_actions;
DROP TABLE payment_events;
ALTER TABLE payments DROP COLUMN correlation_id;
