"""The Amadeus Self-Service API double: one factory, `create_app(config)`.

Request path through the middleware, as the real API behaves: added latency (fault) → bearer
token (401 38190) → rate limit per client (429 38194) → injected 500 141 (fault) → handler.
The token endpoint has no bearer check and no rate limit. `/admin/*` sees no faults and no counters.
Answers carry the real API's Content-Type, `application/json` from the token endpoint and
`application/vnd.amadeus+json` from the API, with no parameter: the official Python SDK is a test
client of this double (tests/sandbox/test_amadeus_sdk.py).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from axiom_shared.logging import get_logger
from sandbox.amadeus.booking import OrderBook, price_offers
from sandbox.amadeus.config import AmadeusSandboxConfig
from sandbox.amadeus.errors import (
    INVALID_ACCESS_TOKEN,
    INVALID_FORMAT,
    NOT_FOUND,
    RESOURCE_NOT_FOUND,
    SYSTEM_ERROR,
    TOO_MANY_REQUESTS,
    AmadeusError,
)
from sandbox.amadeus.offers import search_offers
from sandbox.amadeus.search import SearchQuery, parse_search_body, parse_search_query
from sandbox.amadeus.state import FaultState, FaultsUpdate, RateLimiter, Stats, TokenStore

TOKEN_PATH = "/v1/security/oauth2/token"  # noqa: S105 - a path, not a secret
SEARCH_PATH = "/v2/shopping/flight-offers"
PRICING_PATH = "/v1/shopping/flight-offers/pricing"
ORDERS_PATH = "/v1/booking/flight-orders"

# The media types the real API sends, with no parameter: the official SDKs parse a body only when
# Content-Type is exactly one of these (aiohttp's json_response would add "; charset=utf-8").
OAUTH_MEDIA_TYPE = "application/json"
API_MEDIA_TYPE = "application/vnd.amadeus+json"

log = get_logger("sandbox.amadeus")


@dataclass
class SandboxState:
    config: AmadeusSandboxConfig
    tokens: TokenStore
    limiter: RateLimiter
    faults: FaultState = field(default_factory=FaultState)
    stats: Stats = field(default_factory=Stats)
    orders: OrderBook = field(default_factory=OrderBook)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def today(self) -> date:
        return self.now().date()


state_key = web.AppKey("amadeus_sandbox_state", SandboxState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _count_request(stats: Stats, path: str) -> None:
    if path == TOKEN_PATH:
        stats.token_requests += 1
    elif path == PRICING_PATH:
        stats.pricing_requests += 1
    elif path == SEARCH_PATH:
        stats.search_requests += 1
    elif path == ORDERS_PATH or path.startswith(ORDERS_PATH + "/"):
        stats.order_requests += 1


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@web.middleware
async def amadeus_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/admin/"):
        return await handler(request)
    state = request.app[state_key]
    _count_request(state.stats, request.path)
    if state.faults.latency_seconds:
        await asyncio.sleep(state.faults.latency_seconds)
    try:
        response = await _guarded(request, handler, state)
    except AmadeusError as exc:
        response = _answer(state, exc.body(), status=exc.status)
    state.stats.count_status(response.status)
    return response


async def _guarded(
    request: web.Request, handler: Handler, state: SandboxState
) -> web.StreamResponse:
    if request.path != TOKEN_PATH:
        token = _bearer(request)
        client_id = state.tokens.client_for(token) if token else None
        if client_id is None:
            raise AmadeusError.single(
                401,
                INVALID_ACCESS_TOKEN,
                "The access token provided in the Authorization header is invalid",
            )
        if state.faults.take_forced_429() or not state.limiter.admit(client_id):
            raise AmadeusError.single(
                429, TOO_MANY_REQUESTS, "The network rate limit is exceeded, please try again later"
            )
    if state.faults.take_failure(request.path):
        raise AmadeusError.single(500, SYSTEM_ERROR, "Injected failure (sandbox fault switch)")
    try:
        return await handler(request)
    except web.HTTPNotFound:
        raise AmadeusError.single(
            404, RESOURCE_NOT_FOUND, "The targeted resource doesn't exist"
        ) from None
    except web.HTTPMethodNotAllowed as exc:
        raise AmadeusError.single(
            405, (38197, "Method not allowed"), f"Allowed: {', '.join(sorted(exc.allowed_methods))}"
        ) from None


def _json_answer(
    body: dict[str, Any] | bytes, *, status: int, media_type: str, charset_parameter: bool
) -> web.Response:
    """JSON in UTF-8 under `media_type`, set as the header itself so that aiohttp adds no
    charset; `charset_parameter` (a fault switch) adds one, as some gateways do. `body` may
    come already encoded."""
    content_type = f"{media_type}; charset=utf-8" if charset_parameter else media_type
    return web.Response(
        body=body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode(),
        status=status,
        headers={"Content-Type": content_type},
    )


@functools.lru_cache(maxsize=1024)
def _encoded_search(query: SearchQuery, today: date, self_link: str | None) -> bytes:
    """A search answer, encoded: the offers are a pure function of the query and the day, so
    the same search is built once. Upstream's own work is not what a benchmark of our path
    should measure on the same cores ("an upstream double answering at once"), and a double
    that spends a millisecond per answer did; this one builds each distinct answer once."""
    answer = search_offers(query, today)
    if self_link is not None:
        answer["meta"]["links"] = {"self": self_link}
    return json.dumps(answer, ensure_ascii=False).encode()


def _oauth_answer(state: SandboxState, body: dict[str, Any], status: int = 200) -> web.Response:
    return _json_answer(
        body,
        status=status,
        media_type=OAUTH_MEDIA_TYPE,
        charset_parameter=state.faults.charset_parameter,
    )


def _oauth_error(state: SandboxState, status: int, error: str, description: str) -> web.Response:
    body = {
        "error": error,
        "error_description": description,
        "code": 38187,
        "title": "Invalid parameters",
    }
    return _oauth_answer(state, body, status)


async def issue_token(request: web.Request) -> web.Response:
    state = request.app[state_key]
    config = state.config
    form = await request.post()
    grant_type = form.get("grant_type")
    if grant_type is None:
        return _oauth_error(
            state, 400, "invalid_request", "Mandatory grant_type form parameter missing"
        )
    if grant_type != "client_credentials":
        return _oauth_error(
            state,
            400,
            "unsupported_grant_type",
            "Only client_credentials value is allowed for the body parameter grant_type",
        )
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if not (
        isinstance(client_id, str)
        and isinstance(client_secret, str)
        and hmac.compare_digest(client_id.encode(), config.client_id.encode())
        and hmac.compare_digest(client_secret.encode(), config.client_secret.encode())
    ):
        return _oauth_error(state, 401, "invalid_client", "Client credentials are invalid")
    token = state.tokens.issue(client_id)
    state.stats.tokens_issued += 1
    log.info("token issued", client_id=client_id, expires_in=config.token_ttl_seconds)
    return _oauth_answer(
        state,
        {
            "type": "amadeusOAuth2Token",
            "username": f"{config.application_name}@sandbox.local",
            "application_name": config.application_name,
            "client_id": client_id,
            "token_type": "Bearer",
            "access_token": token,
            "expires_in": config.token_ttl_seconds,
            "state": "approved",
            "scope": "",
        },
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AmadeusError.single(
            400, INVALID_FORMAT, "The body is not valid JSON", pointer="/"
        ) from None


def _answer(state: SandboxState, body: dict[str, Any] | bytes, status: int = 200) -> web.Response:
    return _json_answer(
        body,
        status=status,
        media_type=API_MEDIA_TYPE,
        charset_parameter=state.faults.charset_parameter,
    )


async def search_get(request: web.Request) -> web.Response:
    state = request.app[state_key]
    query = parse_search_query(request.query, state.today())
    return _answer(state, _encoded_search(query, state.today(), str(request.url)))


async def search_post(request: web.Request) -> web.Response:
    # Amadeus documents X-HTTP-Method-Override: GET for this POST; it answers the same without it.
    state = request.app[state_key]
    query = parse_search_body(await _json_body(request), state.today())
    return _answer(state, _encoded_search(query, state.today(), None))


async def price(request: web.Request) -> web.Response:
    state = request.app[state_key]
    body = await _json_body(request)
    return _answer(
        state, price_offers(body, price_discrepancy=state.faults.pricing_price_discrepancy)
    )


async def create_order(request: web.Request) -> web.Response:
    state = request.app[state_key]
    body = await _json_body(request)
    answer = state.orders.create(
        body, failure_code=state.faults.booking_failure_code, now=state.now()
    )
    state.stats.orders_created += 1
    order_id = answer["data"]["id"]
    log.info("flight order created", order_id=order_id)
    response = _answer(state, answer, status=201)
    response.headers["Location"] = f"{request.url.origin()}{ORDERS_PATH}/{order_id}"
    return response


def _order_or_404(request: web.Request) -> tuple[SandboxState, str]:
    state = request.app[state_key]
    order_id = request.match_info["order_id"]
    if order_id not in state.orders.orders:
        raise AmadeusError.single(404, NOT_FOUND, "Booking not found")
    return state, order_id


async def get_order(request: web.Request) -> web.Response:
    state, order_id = _order_or_404(request)
    return _answer(state, {"data": state.orders.orders[order_id]})


async def delete_order(request: web.Request) -> web.Response:
    state, order_id = _order_or_404(request)
    del state.orders.orders[order_id]
    return web.Response(status=204)


# ---- admin: fault switches and counters (not part of Amadeus) ----


def _admin_view(state: SandboxState) -> dict[str, Any]:
    return {**state.faults.snapshot(), "active_tokens": state.tokens.active()}


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(_admin_view(request.app[state_key]))


async def set_faults(request: web.Request) -> web.Response:
    state = request.app[state_key]
    try:
        update = FaultsUpdate.model_validate_json(await request.read())
    except ValidationError as exc:
        details = json.loads(exc.json(include_url=False, include_context=False))
        return web.json_response({"error": "invalid faults", "details": details}, status=400)
    state.faults.apply(update)
    if update.expire_tokens:
        expired = state.tokens.expire_all()
        log.info("tokens expired by fault switch", count=expired)
    log.info("faults set", **state.faults.snapshot())
    return web.json_response(_admin_view(state))


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[state_key].stats.snapshot())


async def reset(request: web.Request) -> web.Response:
    """Clear faults, counters and rate windows. Tokens stay valid and order ids keep counting."""
    state = request.app[state_key]
    state.faults = FaultState()
    state.stats = Stats()
    state.limiter.reset()
    return web.json_response(_admin_view(state))


def create_app(
    config: AmadeusSandboxConfig, *, now: Callable[[], datetime] | None = None
) -> web.Application:
    """Build the double. `now` (UTC) may be pinned by tests that need a fixed 'today'."""
    state = SandboxState(
        config=config,
        tokens=TokenStore(config.token_ttl_seconds),
        limiter=RateLimiter(config.rate_limit_per_second, config.min_interval_seconds),
    )
    if now is not None:
        state.now = now
    app = web.Application(middlewares=[amadeus_middleware])
    app[state_key] = state
    app.router.add_post(TOKEN_PATH, issue_token)
    app.router.add_get(SEARCH_PATH, search_get)
    app.router.add_post(SEARCH_PATH, search_post)
    app.router.add_post(PRICING_PATH, price)
    app.router.add_post(ORDERS_PATH, create_order)
    app.router.add_get(ORDERS_PATH + "/{order_id}", get_order)
    app.router.add_delete(ORDERS_PATH + "/{order_id}", delete_order)
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", set_faults)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_post("/admin/reset", reset)
    return app
