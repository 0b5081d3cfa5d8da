"""Rate limits on the gateway's routes (`/api/proxy/*`: 10 requests per 10 s per client).

An exact sliding window kept in Redis (see `ratelimit_lua`), shared by every replica and timed
by Redis's clock. When Redis is down or does not answer within `rate_limit_redis_timeout`, each
replica decides alone with the same window in memory (`ratelimit_memory`), says so in the
`axiom_rate_limit_decisions_total` metric and a warning, and tries Redis again after
`rate_limit_redis_retry_interval`; a rate limiter never turns a request into a 500.

Every answer on a limited route carries the IETF draft's `RateLimit-Policy`/`RateLimit` fields
and the older `RateLimit-Limit`/`-Remaining`/`-Reset`; a 429 adds `Retry-After`. The headers
are added when the response is prepared, so error answers (422, 404, ...) carry them too.

Wiring, in `create_app` after `create_service_app`: `install_rate_limiting(app, settings)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from axiom_gateway.client_identity import IdentityRules, client_identity
from axiom_gateway.ratelimit_lua import SLIDING_WINDOW_LUA
from axiom_gateway.ratelimit_memory import Decision, MemorySlidingWindow
from axiom_gateway.ratelimit_settings import RateLimitRule, RateLimitSettings
from axiom_shared.credentials import secret_matches
from axiom_shared.errors import ApiError
from axiom_shared.logging import get_logger
from axiom_shared.metrics import RATE_LIMIT_DECISIONS
from axiom_shared.routes import RateLimitClass, Route, route_of
from axiom_shared.service import redis_key
from axiom_shared.settings import secret_value

log = get_logger(__name__)

RedisGetter = Callable[[web.Request], Redis | None]

#: The rate-limit headers of this request's answer, set by the middleware.
rate_limit_headers_key = web.RequestKey("rate_limit_headers", dict[str, str])
#: Set by the middleware when the request carried a valid admin token (no limit applies).
admin_request_key = web.RequestKey("admin_request", bool)

#: While falling back, a reminder is logged at most this often (seconds).
FALLBACK_LOG_INTERVAL = 30.0


#: At most this many decisions go to Redis in one script call (one atomic Lua run).
MAX_COALESCED = 256


@dataclass
class _Pending:
    key: str
    limit: int
    window_us: int
    future: asyncio.Future[Decision]


class RedisSlidingWindow:
    """The shared window. Decisions asked for in the same event-loop turn are coalesced into
    one EVALSHA (see `ratelimit_lua`): one round trip and one Lua run for many requests, each
    still decided exactly and in order. The script is loaded again on NOSCRIPT."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._script: AsyncScript | None = None
        #: Per Redis client: the decisions waiting for this turn's call.
        self._pending: dict[int, tuple[Redis, list[_Pending]]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        #: Script calls made and decisions they carried (for tests and the operator).
        self.calls = 0
        self.decisions = 0

    def key(self, rule: RateLimitRule, identity: str) -> str:
        # Hashed: bounded key length, and no caller-chosen text (user ids) in Redis key names.
        digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{self.prefix}:{rule.prefix}:{digest}"

    async def hit(self, client: Redis, rule: RateLimitRule, identity: str) -> Decision:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision] = loop.create_future()
        pending = _Pending(
            self.key(rule, identity), rule.limit, max(round(rule.window * 1_000_000), 1), future
        )
        queued = self._pending.get(id(client))
        if queued is None:
            self._pending[id(client)] = (client, [pending])
            # After the callbacks already due in this turn: every decision they ask for joins.
            loop.call_soon(self._flush, id(client))
        else:
            queued[1].append(pending)
        return await future

    def _flush(self, client_id: int) -> None:
        client, batch = self._pending.pop(client_id)
        for start in range(0, len(batch), MAX_COALESCED):
            task = asyncio.create_task(self._send(client, batch[start : start + MAX_COALESCED]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, client: Redis, batch: list[_Pending]) -> None:
        # A caller that gave up (its timeout) is still sent: its request was already let
        # through the fallback or refused; counting it is the safe side.
        args: list[int | str] = []
        for item in batch:
            args += (item.limit, item.window_us, secrets.token_hex(8))
        try:
            if self._script is None:
                self._script = client.register_script(SLIDING_WINDOW_LUA)
            result = await self._script(keys=[i.key for i in batch], args=args, client=client)
            values = [int(value) for value in result]
            if len(values) != 3 * len(batch):
                raise ValueError(f"the limiter script answered {len(values)} values")
        except Exception as exc:  # every waiter decides without Redis
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.calls += 1
        self.decisions += len(batch)
        for n, item in enumerate(batch):
            allowed, remaining, reset_us = values[3 * n : 3 * n + 3]
            if not item.future.done():
                item.future.set_result(
                    Decision(
                        allowed=allowed == 1,
                        remaining=max(remaining, 0),
                        reset_ms=max(math.ceil(reset_us / 1000), 0),
                    )
                )


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    #: The metric's decision label: allowed, limited, fallback_allowed, fallback_limited.
    label: str


class RateLimiter:
    """Decides for one request: Redis first, the in-memory window when Redis cannot answer."""

    def __init__(
        self,
        rules: Sequence[RateLimitRule],
        *,
        redis_prefix: str,
        redis_timeout: float,
        retry_interval: float,
        fallback_max_clients: int,
        payment_rules: Sequence[RateLimitRule] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Longest prefix first, so that a more specific rule wins.
        self.client_rules = _longest_first(rules)
        self.rules = _longest_first([*rules, *payment_rules])
        self._by_route: dict[tuple[str, str], RateLimitRule | None] = {}
        self.redis_timeout = redis_timeout
        self.retry_interval = retry_interval
        self.shared = RedisSlidingWindow(redis_prefix)
        self.fallback = MemorySlidingWindow(fallback_max_clients, clock)
        self._clock = clock
        self._redis_failed_at: float | None = None
        self._last_warning_at = -math.inf
        self._fallback_decisions = 0

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimiter:
        return cls(
            settings.rate_limits,
            payment_rules=[settings.payment_rate_limit],
            redis_prefix=settings.rate_limit_redis_prefix,
            redis_timeout=settings.rate_limit_redis_timeout,
            retry_interval=settings.rate_limit_redis_retry_interval,
            fallback_max_clients=settings.rate_limit_fallback_max_clients,
        )

    def rule_for(self, path: str, method: str = "GET") -> RateLimitRule | None:
        """The rule for a request no route matched (a 404 or 405 still counts)."""
        return _first_applying(self.rules, path, method)

    def rule_for_route(self, route: Route) -> RateLimitRule | None:
        """The rule for a route of the table, by its rate-limit class (looked up once)."""
        if route.key not in self._by_route:
            if route.rate_limit is RateLimitClass.NONE:
                rule = None
            elif route.rate_limit is RateLimitClass.PAYMENT:
                rule = _first_applying(self.rules, route.path, route.method)
            else:
                rule = _first_applying(self.client_rules, route.path, route.method)
            self._by_route[route.key] = rule
        return self._by_route[route.key]

    @property
    def degraded(self) -> bool:
        return self._redis_failed_at is not None

    async def decide(self, rule: RateLimitRule, identity: str, redis: Redis | None) -> Verdict:
        if redis is not None and self._may_try_redis():
            try:
                async with asyncio.timeout(self.redis_timeout):
                    decision = await self.shared.hit(redis, rule, identity)
            except Exception as exc:  # any failure of the shared limiter means: decide locally
                self._redis_failed(exc)
            else:
                self._redis_answered()
                return Verdict(decision, "allowed" if decision.allowed else "limited")
        elif redis is None:
            self._redis_failed(None)
        decision = self.fallback.hit(f"{rule.prefix}\n{identity}", rule.limit, rule.window)
        self._fallback_decisions += 1
        return Verdict(decision, "fallback_allowed" if decision.allowed else "fallback_limited")

    def _may_try_redis(self) -> bool:
        failed_at = self._redis_failed_at
        return failed_at is None or self._clock() - failed_at >= self.retry_interval

    def _redis_failed(self, exc: Exception | None) -> None:
        now = self._clock()
        self._redis_failed_at = now
        # One warning when it starts, then a reminder now and then: never one per request.
        if now - self._last_warning_at >= FALLBACK_LOG_INTERVAL:
            self._last_warning_at = now
            log.warning(
                "rate limiter: redis unavailable, limiting per replica in memory",
                error=type(exc).__name__ if exc is not None else "no redis client",
                fallback_decisions=self._fallback_decisions,
            )

    def _redis_answered(self) -> None:
        if self._redis_failed_at is not None:
            log.info(
                "rate limiter: redis answers again, shared limits resume",
                fallback_decisions=self._fallback_decisions,
            )
            self._redis_failed_at = None
            self._last_warning_at = -math.inf
            self._fallback_decisions = 0


def _longest_first(rules: Sequence[RateLimitRule]) -> list[RateLimitRule]:
    return sorted(rules, key=lambda rule: len(rule.prefix), reverse=True)


def _first_applying(rules: Sequence[RateLimitRule], path: str, method: str) -> RateLimitRule | None:
    for rule in rules:
        if rule.applies(path, method):
            return rule
    return None


rate_limiter_key = web.AppKey("rate_limiter", RateLimiter)


def _seconds(value: float) -> int:
    return max(math.ceil(value), 0)


def policy_headers(rule: RateLimitRule) -> dict[str, str]:
    return {
        "RateLimit-Policy": f'"{rule.policy}";q={rule.limit};w={_seconds(rule.window)}',
        "RateLimit-Limit": str(rule.limit),
    }


def decision_headers(rule: RateLimitRule, decision: Decision) -> dict[str, str]:
    reset = decision.reset_seconds
    return {
        **policy_headers(rule),
        "RateLimit": f'"{rule.policy}";r={decision.remaining};t={reset}',
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(reset),
    }


def is_admin(request: web.Request, header: str, tokens: Sequence[str | None]) -> bool:
    """True only for a right token (`admin_token` or `admin_token_next`); the header alone is
    nothing. Compared as every secret is (`secret_matches`): constant time, length-blind."""
    return secret_matches(request.headers.get(header), tokens)


def _redis_of(request: web.Request) -> Redis | None:
    return request.config_dict.get(redis_key)


def rate_limit_middleware(
    settings: RateLimitSettings,
    redis_getter: RedisGetter = _redis_of,
    limiter: RateLimiter | None = None,
) -> Middleware:
    """The middleware alone; `install_rate_limiting` also puts the headers on every answer."""
    limiter = limiter or RateLimiter.from_settings(settings)
    rules = IdentityRules.from_settings(settings)
    admin_header = settings.admin_token_header
    admin_tokens = [secret_value(settings.admin_token), secret_value(settings.admin_token_next)]

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route is not None:
            rule = limiter.rule_for_route(route)
        else:
            rule = limiter.rule_for(request.path, request.method)
        if rule is None:
            return await handler(request)
        if is_admin(request, admin_header, admin_tokens):
            RATE_LIMIT_DECISIONS.labels(route=rule.prefix, decision="bypassed").inc()
            request[rate_limit_headers_key] = policy_headers(rule)
            request[admin_request_key] = True
            return await handler(request)
        identity = client_identity(request, rules)
        verdict = await limiter.decide(rule, identity, redis_getter(request))
        RATE_LIMIT_DECISIONS.labels(route=rule.prefix, decision=verdict.label).inc()
        request[rate_limit_headers_key] = decision_headers(rule, verdict.decision)
        if not verdict.decision.allowed:
            raise _limited(rule, verdict.decision)
        return await handler(request)

    return rate_limit


def _limited(rule: RateLimitRule, decision: Decision, what: str = "requests") -> ApiError:
    retry_after = max(decision.reset_seconds, 1)
    return ApiError(
        429,
        "rate_limited",
        f"too many {what}: at most {rule.limit} per {rule.window:g} s; retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


async def limit_by_key(request: web.Request, rule: RateLimitRule, key: str, what: str) -> None:
    """Count this request against `key` (something the body names, e.g. the payer account of a
    transaction request) as well as against its client; 429 past `rule`. Admins bypass."""
    if request.get(admin_request_key):
        return
    limiter = request.app[rate_limiter_key]
    verdict = await limiter.decide(rule, key, _redis_of(request))
    RATE_LIMIT_DECISIONS.labels(route=rule.prefix, decision=verdict.label).inc()
    if not verdict.decision.allowed:
        raise _limited(rule, verdict.decision, what)


async def _add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = request.get(rate_limit_headers_key)
    if headers:
        response.headers.update(headers)


def install_rate_limiting(
    app: web.Application,
    settings: RateLimitSettings,
    *,
    redis_getter: RedisGetter = _redis_of,
) -> RateLimiter:
    """Limit `app`'s routes per `settings.rate_limits`, with `app[redis_key]` as the shared
    store. Call before the app starts; the middleware runs inside the shared error/metrics one,
    so a 429 is written in the one error format."""
    limiter = RateLimiter.from_settings(settings)
    app[rate_limiter_key] = limiter
    app.middlewares.append(rate_limit_middleware(settings, redis_getter, limiter))
    app.on_response_prepare.append(_add_rate_limit_headers)
    return limiter
