"""Feature flags for gradual rollout: a feature turned off is refused cleanly at the edge.

`FEATURE_SOLANA_PAYMENTS`, `FEATURE_HELIUS_INGEST`, `FEATURE_PAYMOB_INGEST` and
`FEATURE_AMADEUS` (all on by default) each guard a set of routes. A request to a route whose
feature is off gets `503` in the one error format, code `feature_disabled`, with `Retry-After`,
before anything is validated, counted by the rate limiter, sent over NATS or stored: a 503
tells a webhook provider to deliver again later, and a browser or client to retry.

Which routes a feature guards is the route table's `feature` (each route says it once). Only
routes that exist are guarded (a wrong path is still 404, a wrong method 405), and only the
methods that do the work: with Solana payments off, creating a payment and
`/api/pay/verify` are refused while check-status, the SSE stream, the QR code, the catalogue
and the transaction request's `GET` keep answering, so payments already made still settle.

Wiring, in `create_app` before `install_rate_limiting`: `install_feature_flags(app, settings)`.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter
from pydantic import Field

from axiom_shared.errors import ApiError, ErrorDetail
from axiom_shared.logging import get_logger
from axiom_shared.routes import route_of
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


#: What a refused request is told, per feature. Which routes a feature guards is said by the
#: route table (`Route.feature`), nowhere else.
FEATURE_MESSAGES: dict[str, str] = {
    "solana_payments": "new Solana payments and verification requests are paused; payments "
    "already made are still watched, retry later",
    "helius_ingest": "Helius webhook ingest is paused; nothing was stored, deliver again later",
    "paymob_ingest": "Paymob callback ingest is paused; nothing was stored, deliver again later",
    "amadeus": "flight search and booking are paused; retry later",
}


def disabled_features(settings: FeatureFlagSettings) -> list[str]:
    flags = {
        "solana_payments": settings.feature_solana_payments,
        "helius_ingest": settings.feature_helius_ingest,
        "paymob_ingest": settings.feature_paymob_ingest,
        "amadeus": settings.feature_amadeus,
    }
    return [name for name, enabled in flags.items() if not enabled]


def feature_flag_middleware(off: Iterable[str], retry_after: int) -> Middleware:
    """Refuse the requests whose route (in the app's route table) belongs to a feature in
    `off`; everything else passes untouched (unmatched paths and methods keep their 404/405)."""
    closed = frozenset(off)

    @web.middleware
    async def feature_flags(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route is not None and route.feature in closed:
            FEATURE_DISABLED_REQUESTS.labels(feature=route.feature).inc()
            raise ApiError(
                503,
                "feature_disabled",
                FEATURE_MESSAGES[route.feature],
                [ErrorDetail(problem=f"feature {route.feature} is turned off")],
                headers={"Retry-After": str(retry_after)},
            )
        return await handler(request)

    return feature_flags


def install_feature_flags(app: web.Application, settings: FeatureFlagSettings) -> list[str]:
    """Guard the routes of every feature turned off in `settings`; returns their names. Install
    before the rate limiter, so a refused request spends no one's budget."""
    off = disabled_features(settings)
    if off:
        app.middlewares.append(feature_flag_middleware(off, settings.feature_retry_after_seconds))
        log.warning("features turned off", features=off)
    return off
