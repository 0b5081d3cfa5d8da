-- The audit trail: every status change of every payment, written in the same transaction as
-- the change (so it can neither be missing nor describe a change that did not happen), and
-- every operator action. Both tables are append-only: UPDATE and DELETE are refused.
CREATE TABLE payment_events (
    id INTEGER PRIMARY KEY,
    payment_id INTEGER NOT NULL REFERENCES payments (id),
    from_status TEXT,
    to_status TEXT NOT NULL,
    version INTEGER NOT NULL,
    reason TEXT,
    source TEXT NOT NULL,
    correlation_id TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX idx_payment_events_payment_id ON payment_events (payment_id);
CREATE TRIGGER payment_events_append_only_update BEFORE UPDATE ON payment_events
BEGIN
    SELECT RAISE(ABORT, 'payment_events is append-only');
END;
CREATE TRIGGER payment_events_append_only_delete BEFORE DELETE ON payment_events
BEGIN
    SELECT RAISE(ABORT, 'payment_events is append-only');
END;

CREATE TABLE operator_actions (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT,
    actor TEXT NOT NULL,
    correlation_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TRIGGER operator_actions_append_only_update BEFORE UPDATE ON operator_actions
BEGIN
    SELECT RAISE(ABORT, 'operator_actions is append-only');
END;
CREATE TRIGGER operator_actions_append_only_delete BEFORE DELETE ON operator_actions
BEGIN
    SELECT RAISE(ABORT, 'operator_actions is append-only');
END;

-- The correlation id of the request that created the payment: later work for it (verdicts,
-- provisioning, events) carries the same id, so one id follows a payment through the logs.
ALTER TABLE payments ADD COLUMN correlation_id TEXT;

-- Payments created before this migration get their creation in the trail.
INSERT INTO payment_events
    (payment_id, from_status, to_status, version, reason, source, correlation_id, created_at)
SELECT id, NULL, 'pending', 1, 'recorded at migration', 'creation', NULL, created_at
FROM payments;
