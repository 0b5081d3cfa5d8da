-- The bookings audit trail. Triggers write it, so every change to a booking's state or
-- payment status (by the booking flow, a Paymob callback, or anything else) is recorded in
-- the same transaction as the change, with no code path able to forget it. Append-only, like
-- paymob_callbacks (each callback's record).
CREATE TABLE booking_events (
    id INTEGER PRIMARY KEY,
    booking_id TEXT NOT NULL,
    field TEXT NOT NULL,
    from_value TEXT,
    to_value TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX idx_booking_events_booking_id ON booking_events (booking_id);

CREATE TRIGGER booking_events_on_insert AFTER INSERT ON agent_transactions
WHEN NEW.booking_state IS NOT NULL OR NEW.payment_status IS NOT NULL
BEGIN
    INSERT INTO booking_events (booking_id, field, from_value, to_value)
    VALUES (NEW.id, 'booking_state', NULL, NEW.booking_state);
END;
CREATE TRIGGER booking_events_on_state AFTER UPDATE OF booking_state ON agent_transactions
WHEN OLD.booking_state IS NOT NEW.booking_state
BEGIN
    INSERT INTO booking_events (booking_id, field, from_value, to_value)
    VALUES (NEW.id, 'booking_state', OLD.booking_state, NEW.booking_state);
END;
CREATE TRIGGER booking_events_on_payment AFTER UPDATE OF payment_status ON agent_transactions
WHEN OLD.payment_status IS NOT NEW.payment_status
BEGIN
    INSERT INTO booking_events (booking_id, field, from_value, to_value)
    VALUES (NEW.id, 'payment_status', OLD.payment_status, NEW.payment_status);
END;
CREATE TRIGGER booking_events_on_delete AFTER DELETE ON agent_transactions
BEGIN
    INSERT INTO booking_events (booking_id, field, from_value, to_value)
    VALUES (OLD.id, 'deleted', OLD.booking_state, NULL);
END;

CREATE TRIGGER booking_events_append_only_update BEFORE UPDATE ON booking_events
BEGIN
    SELECT RAISE(ABORT, 'booking_events is append-only');
END;
CREATE TRIGGER booking_events_append_only_delete BEFORE DELETE ON booking_events
BEGIN
    SELECT RAISE(ABORT, 'booking_events is append-only');
END;
CREATE TRIGGER paymob_callbacks_append_only_update BEFORE UPDATE ON paymob_callbacks
BEGIN
    SELECT RAISE(ABORT, 'paymob_callbacks is append-only');
END;
CREATE TRIGGER paymob_callbacks_append_only_delete BEFORE DELETE ON paymob_callbacks
BEGIN
    SELECT RAISE(ABORT, 'paymob_callbacks is append-only');
END;
