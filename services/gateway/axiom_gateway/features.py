"""Feature flags for gradual rollout: a feature turned off is refused cleanly at the edge.

`FEATURE_SOLANA_PAYMENTS`, `FEATURE_HELIUS_INGEST`, `FEATURE_PAYMOB_INGEST` and
`FEATURE_AMADEUS` (all on by default) each guard a set of routes. A request to a route whose
feature is off gets `503` in the one error format, code `feature_disabled`, with `Retry-After`,
before anything is validated, counted by the rate limiter, sent over NATS or stored: a 503
tells a webhook provider to deliver again later, and a browser or client to retry.

Only routes that exist are guarded (a wrong path is still 404, a wrong method 405), and only
the methods that do the work: with Solana payments off, creating a payment and
`/api/pay/verify` are refused while check-status, the SSE stream, the QR code, the catalogue
and the transaction request's `GET` keep answering, so payments already made still settle.

Wiring, in `create_app` before `install_rate_limiting`: `install_feature_flags(app, settings)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter
from pydantic import Field

from axiom_shared.errors import ApiError, ErrorDetail
from axiom_shared.logging import get_logger
from axiom_shared.settings import ServiceSettings

log = get_logger(__name__)

FEATURE_DISABLED_REQUESTS = Counter(
    "axiom_feature_disabled_requests_total",
    "Requests refused with 503 feature_disabled because their feature flag is off",
    ["feature"],
)


class FeatureFlagSettings(ServiceSettings):
    """`FEATURE_*=false` turns a feature off on this replica (all are on by default)."""

    #: Payment creation (`POST /api/pay/req/{order_id}`) and `POST /api/pay/verify`.
    feature_solana_payments: bool = True
    #: Helius webhooks in (`/api/webhooks/helius`); the reconcile loop keeps finding payments.
    feature_helius_ingest: bool = True
    #: Paymob callbacks and redirects in (`/api/webhooks/paymob`).
    feature_paymob_ingest: bool = True
    #: The Amadeus routes (`/api/proxy/amadeus/*`).
    feature_amadeus: bool = True
    #: `Retry-After` (seconds) on a `feature_disabled` answer.
    feature_retry_after_seconds: int = Field(default=60, ge=1, le=86_400)


@dataclass(frozen=True)
class FeatureGate:
    """The routes of one feature: route templates starting with `route_prefix`, for `methods`
    (empty: every method)."""

    feature: str
    route_prefix: str
    methods: frozenset[str]
    message: str

    def guards(self, route: str, method: str) -> bool:
        return route.startswith(self.route_prefix) and (not self.methods or method in self.methods)


GATES: tuple[FeatureGate, ...] = (
    FeatureGate(
        "solana_payments",
        "/api/pay/req/",
        frozenset({"POST"}),
        "new Solana payments are paused; retry later",
    ),
    FeatureGate(
        "solana_payments",
        "/api/pay/verify",
        frozenset({"POST"}),
        "payment verification requests are paused; the payment is still watched, retry later",
    ),
    FeatureGate(
        "helius_ingest",
        "/api/webhooks/helius",
        frozenset(),
        "Helius webhook ingest is paused; nothing was stored, deliver again later",
    ),
    FeatureGate(
        "paymob_ingest",
        "/api/webhooks/paymob",
        frozenset(),
        "Paymob callback ingest is paused; nothing was stored, deliver again later",
    ),
    FeatureGate(
        "amadeus",
        "/api/proxy/amadeus/",
        frozenset(),
        "flight search and booking are paused; retry later",
    ),
)


def disabled_features(settings: FeatureFlagSettings) -> list[str]:
    flags = {
        "solana_payments": settings.feature_solana_payments,
        "helius_ingest": settings.feature_helius_ingest,
        "paymob_ingest": settings.feature_paymob_ingest,
        "amadeus": settings.feature_amadeus,
    }
    return [name for name, enabled in flags.items() if not enabled]


def feature_flag_middleware(gates: Iterable[FeatureGate], retry_after: int) -> Middleware:
    """Refuse the requests that `gates` guard; everything else passes untouched."""
    closed = tuple(gates)

    @web.middleware
    async def feature_flags(request: web.Request, handler: Handler) -> web.StreamResponse:
        match_info = request.match_info
        resource = match_info.route.resource
        # Unmatched paths and methods keep their own 404/405.
        if match_info.http_exception is None and resource is not None:
            for gate in closed:
                if gate.guards(resource.canonical, request.method):
                    FEATURE_DISABLED_REQUESTS.labels(feature=gate.feature).inc()
                    raise ApiError(
                        503,
                        "feature_disabled",
                        gate.message,
                        [ErrorDetail(problem=f"feature {gate.feature} is turned off")],
                        headers={"Retry-After": str(retry_after)},
                    )
        return await handler(request)

    return feature_flags


def install_feature_flags(app: web.Application, settings: FeatureFlagSettings) -> list[str]:
    """Guard the routes of every feature turned off in `settings`; returns their names. Install
    before the rate limiter, so a refused request spends no one's budget."""
    off = disabled_features(settings)
    if off:
        gates = [gate for gate in GATES if gate.feature in off]
        app.middlewares.append(feature_flag_middleware(gates, settings.feature_retry_after_seconds))
        log.warning("features turned off", features=off)
    return off
