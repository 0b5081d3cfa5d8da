-- Legacy Paymob card payments (see axiom_amadeus_proxy.paymob). A booking paid by card knows
-- its Paymob order by `paymob_order_id` (set when the Paymob order is registered; one booking
-- per order, hence UNIQUE; NULLs, i.e. every other row, do not collide). Its payment state is
-- a column of its own: `status` mirrors the booking flow and must not be overwritten by it.
ALTER TABLE agent_transactions ADD COLUMN paymob_order_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS ux_agent_transactions_paymob_order_id
    ON agent_transactions (paymob_order_id);
ALTER TABLE agent_transactions ADD COLUMN payment_status TEXT CHECK (
    payment_status IS NULL OR payment_status IN ('paid', 'refunded', 'voided')
);
ALTER TABLE agent_transactions ADD COLUMN paymob_transaction_id TEXT;
ALTER TABLE agent_transactions ADD COLUMN payment_updated_at TEXT;
-- Every authentic callback, once per (transaction, state): a retried callback is one row, a
-- later refund or void of the same transaction is another. Callbacks for an order we never
-- issued, or whose amount differs from the booking's, are kept and flagged, never applied.
CREATE TABLE IF NOT EXISTS paymob_callbacks (
    id INTEGER PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('success', 'declined', 'pending', 'refunded', 'voided')),
    amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
    currency TEXT NOT NULL,
    booking_id TEXT,
    flag TEXT CHECK (flag IS NULL OR flag IN ('unknown_order', 'amount_mismatch')),
    applied INTEGER NOT NULL CHECK (applied IN (0, 1)),
    via TEXT NOT NULL CHECK (via IN ('callback', 'redirect')),
    raw TEXT NOT NULL,
    received_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    UNIQUE (transaction_id, state)
);
CREATE INDEX IF NOT EXISTS ix_paymob_callbacks_order_id ON paymob_callbacks (order_id);
CREATE INDEX IF NOT EXISTS ix_paymob_callbacks_flag
    ON paymob_callbacks (flag) WHERE flag IS NOT NULL;
