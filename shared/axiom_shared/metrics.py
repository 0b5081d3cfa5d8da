"""Prometheus metrics shared by every service, and the `/metrics` exposition.

Names follow Prometheus conventions (`axiom_` prefix, `_total` counters, `_seconds`
histograms). Labels never carry secrets, ids or free text, only small fixed sets.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

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
