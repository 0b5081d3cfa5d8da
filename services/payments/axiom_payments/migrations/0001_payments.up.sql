-- Payments, from the plan, corrected: tx_signature is nullable (a pending payment has none
-- yet) but UNIQUE (one transaction can pay one payment only, even if it carries two
-- references); amounts are whole lamports > 0; status is one of the five lifecycle states.
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE CHECK (length(public_id) >= 16),
    order_id TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT 'anonymous',
    reference_key TEXT NOT NULL UNIQUE,
    amount_lamports INTEGER NOT NULL
        CHECK (typeof(amount_lamports) = 'integer' AND amount_lamports > 0),
    received_lamports INTEGER
        CHECK (received_lamports IS NULL
               OR (typeof(received_lamports) = 'integer' AND received_lamports >= 0)),
    recipient TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'verified', 'provisioned', 'failed', 'expired')),
    tx_signature TEXT UNIQUE,
    failure_reason TEXT,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    expires_at TEXT NOT NULL,
    finalized_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- Money cannot be verified without the transaction that paid it.
    CHECK (status NOT IN ('verified', 'provisioned') OR tx_signature IS NOT NULL),
    CHECK (status <> 'failed' OR failure_reason IS NOT NULL)
);
CREATE INDEX idx_payments_user_id ON payments (user_id);
CREATE INDEX idx_payments_status ON payments (status);

-- What provisioning grants: one row per payment, ever (UNIQUE payment_id makes a second
-- provisioning impossible, whatever is redelivered).
CREATE TABLE entitlements (
    id INTEGER PRIMARY KEY,
    payment_id INTEGER NOT NULL UNIQUE REFERENCES payments (id),
    user_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    granted_at TEXT NOT NULL
);
CREATE INDEX idx_entitlements_user_id ON entitlements (user_id);
