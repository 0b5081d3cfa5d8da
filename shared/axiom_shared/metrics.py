"""Prometheus metrics shared by every service, and the `/metrics` exposition.

Names follow Prometheus conventions (`axiom_` prefix, `_total` counters, `_seconds`
histograms). Labels never carry secrets, ids or free text, only small fixed sets.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUEST_SECONDS = Histogram(
    "axiom_http_request_duration_seconds",
    "HTTP request duration by service, route and status class",
    ["service", "route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
NATS_REQUESTS = Counter(
    "axiom_nats_requests_total",
    "NATS request/reply calls made, by subject and outcome (ok, error, unavailable)",
    ["subject", "outcome"],
)
JS_REDELIVERIES = Counter(
    "axiom_jetstream_redeliveries_total",
    "JetStream messages received again after a failed or unacknowledged delivery",
    ["consumer"],
)
DEAD_LETTERS = Counter(
    "axiom_dead_letters_total",
    "Messages moved to a dead-letter subject, by consumer",
    ["consumer"],
)


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process's metrics, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


# --- key figures of the plan (alert rules in deploy/prometheus/alerts.yml use these) ---------
PAYMENT_OUTCOMES = Counter(
    "axiom_payment_outcomes_total",
    "Payments reaching an outcome: provisioned, failed (by reason) or expired",
    ["outcome", "reason"],
)
VERIFICATION_SECONDS = Histogram(
    "axiom_verification_duration_seconds",
    "Time to turn one candidate into findings (chain reads included)",
    ["source"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
RATE_LIMIT_DECISIONS = Counter(
    "axiom_rate_limit_decisions_total",
    "Rate-limit decisions: allowed, limited, bypassed (admin), fallback_allowed, fallback_limited",
    ["route", "decision"],
)
WEBHOOK_ITEMS = Counter(
    "axiom_webhook_items_total",
    "Webhook items received, by provider and outcome (stored, duplicate, rejected, failed)",
    ["provider", "outcome"],
)
WEBHOOK_DELAY_SECONDS = Histogram(
    "axiom_webhook_processing_delay_seconds",
    "From a webhook item's arrival to the payment decision it led to",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
TOKEN_CACHE = Counter(
    "axiom_token_cache_total",
    "Upstream access-token cache lookups: hit, miss, refresh, invalidated",
    ["upstream", "result"],
)
STATUS_READS = Counter(
    "axiom_status_reads_total",
    "check-status answers by where the status came from: followed (memory, kept current by"
    " the status bucket's writes), bucket (a read of it) or payments (the service's database)",
    ["source"],
)
STATUS_FOLLOW_RESETS = Counter(
    "axiom_status_follow_resets_total",
    "Times the followed statuses were forgotten because a status bucket write may have been"
    " missed (a NATS reconnect, a dropped message)",
)
SSE_STREAMS_OPEN = Gauge(
    "axiom_sse_streams_open",
    "Server-Sent Events streams currently open on this replica",
)
PAYMENT_RECEIPTS = Counter(
    "axiom_payment_receipts_total",
    "Receipts counted: finalized transactions that paid a payment (stored once each)",
)
PAYMENT_OBSERVATIONS = Counter(
    "axiom_payment_observations_total",
    "Transactions carrying a payment's reference that are not receipts, by reason"
    " (they never change a status)",
    ["reason"],
)
RECONCILE_LAG_SECONDS = Gauge(
    "axiom_reconcile_lag_seconds",
    "Of every open payment, the longest time since its reference was last scanned on chain"
    " (since its creation when never scanned)",
)
