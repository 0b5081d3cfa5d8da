-- The legacy bookings table as the D1 database has it. IF NOT EXISTS: on the production
-- D1/SQLite file the table is already there with its rows, and this changes nothing.
CREATE TABLE IF NOT EXISTS agent_transactions (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    user_id TEXT,
    kind TEXT NOT NULL,
    amount_cents INTEGER,
    currency TEXT,
    status TEXT NOT NULL,
    details TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
