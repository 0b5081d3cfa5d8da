"""The gateway's rate limit on `/api/proxy/*`, on a real Redis, across two gateway replicas.

Each test builds two small apps with the gateway's middleware stack (the shared error/metrics
middleware, then the rate limiter) on two ports, sharing one Redis; every test has Redis keys
of its own (a unique key prefix), so tests never share a budget.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from ipaddress import ip_network
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from axiom_gateway.ratelimit import install_rate_limiting
from axiom_gateway.ratelimit_settings import RateLimitRule, RateLimitSettings
from axiom_shared.errors import ApiError
from axiom_shared.http import http_middlewares, json_response
from axiom_shared.redis import create_redis
from axiom_shared.service import redis_key
from sandbox.infra import RedisServer
from tests.fixtures.infra import RunningApp, start_app, wait_for

pytestmark = pytest.mark.connected

ROUTE = "/api/proxy/"
ADMIN_TOKEN = "test-admin-token-5f1c9b"
RATE_HEADERS = ("RateLimit-Policy", "RateLimit", "RateLimit-Limit", "RateLimit-Remaining")


async def echo(_request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def refuse(_request: web.Request) -> web.Response:
    raise ApiError(422, "validation_error", "the request is not valid")


def limiter_settings(redis_url: str, limit: int, window: float, **extra: Any) -> RateLimitSettings:
    values: dict[str, Any] = {
        "service_name": "gateway",
        "redis_url": redis_url,
        "rate_limits": [RateLimitRule(prefix=ROUTE, limit=limit, window=window)],
        "rate_limit_redis_prefix": f"test:ratelimit:{uuid.uuid4().hex}",
        # Generous: 50 requests at once share this process's event loop with the servers.
        "rate_limit_redis_timeout": 0.5,
        "rate_limit_redis_retry_interval": 0.2,
    }
    return RateLimitSettings.model_validate(values | extra)


BEHIND_PROXY = {"trusted_proxies": "127.0.0.1"}  # our test client plays the proxy


def gateway_like_app(settings: RateLimitSettings) -> web.Application:
    app = web.Application(middlewares=http_middlewares("gateway"))
    app.router.add_get("/api/proxy/echo", echo)
    app.router.add_post("/api/proxy/refuse", refuse)
    app.router.add_get("/open", echo)

    async def redis_client(app: web.Application) -> AsyncIterator[None]:
        client = create_redis(settings.redis_url, settings.redis_timeout)
        app[redis_key] = client
        yield
        await client.aclose()

    app.cleanup_ctx.append(redis_client)
    install_rate_limiting(app, settings)
    return app


Replicas = Callable[..., Awaitable[list[RunningApp]]]


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    """`await replicas(settings, ...)`: one running app per settings, closed after the test."""
    running: list[RunningApp] = []

    async def start(*all_settings: RateLimitSettings) -> list[RunningApp]:
        apps = [await start_app(gateway_like_app(settings)) for settings in all_settings]
        running.extend(apps)
        return apps

    yield start
    for app in running:
        await app.server.close()


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """What the rate limiter logs during the test (and nothing printed to a closed stream)."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, for tests that stop or freeze it."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.cleanup()


def decisions(decision: str) -> float:
    value = REGISTRY.get_sample_value(
        "axiom_rate_limit_decisions_total", {"route": ROUTE, "decision": decision}
    )
    return value or 0.0


def snapshot() -> dict[str, float]:
    names = ("allowed", "limited", "bypassed", "fallback_allowed", "fallback_limited")
    return {name: decisions(name) for name in names}


def delta(before: dict[str, float]) -> dict[str, float]:
    return {
        name: value - before[name] for name, value in snapshot().items() if value != before[name]
    }


Answer = tuple[int, dict[str, str], Any]


async def get(
    http: aiohttp.ClientSession, app: RunningApp, path: str = "/api/proxy/echo", **headers: str
) -> Answer:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    async with http.get(app.base_url + path, headers=sent) as response:
        return response.status, dict(response.headers), await response.json()


async def burst(
    http: aiohttp.ClientSession, apps: list[RunningApp], count: int, **headers: str
) -> list[Answer]:
    """`count` requests at once, spread over `apps` in turn."""
    return list(
        await asyncio.gather(*(get(http, apps[n % len(apps)], **headers) for n in range(count)))
    )


def assert_limited(answer: Answer, limit: int, window: int) -> None:
    status, headers, body = answer
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert set(body["error"]) == {"code", "message", "details"}
    retry_after = int(headers["Retry-After"])
    assert 1 <= retry_after <= window
    assert headers["RateLimit-Policy"] == f'"default";q={limit};w={window}'
    assert headers["RateLimit"] == f'"default";r=0;t={headers["RateLimit-Reset"]}'
    assert headers["RateLimit-Limit"] == str(limit)
    assert headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["RateLimit-Reset"]) <= window


# --- the shared, exact limit ----------------------------------------------------------------


async def test_two_replicas_admit_exactly_ten_of_fifty(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    settings = limiter_settings(redis_server.url, limit=10, window=10)
    apps = await replicas(settings, settings)
    before = snapshot()

    answers = await burst(http, apps, 50)

    admitted = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] != 200]
    assert len(admitted) == 10
    assert len(refused) == 40
    for answer in refused:
        assert_limited(answer, limit=10, window=10)
    # One atomic count: each admitted request saw a different remaining budget.
    assert sorted(int(a[1]["RateLimit-Remaining"]) for a in admitted) == list(range(10))
    for _status, headers, _body in admitted:
        assert headers["RateLimit-Policy"] == '"default";q=10;w=10'
        assert headers["RateLimit"] == (
            f'"default";r={headers["RateLimit-Remaining"]};t={headers["RateLimit-Reset"]}'
        )
        assert "Retry-After" not in headers
    assert delta(before) == {"allowed": 10, "limited": 40}

    # A route outside /api/proxy/ is neither limited nor labelled.
    status, headers, _ = await get(http, apps[0], "/open")
    assert status == 200
    assert not any(name in headers for name in RATE_HEADERS)


async def test_every_answer_of_a_limited_route_carries_the_headers(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    (app,) = await replicas(limiter_settings(redis_server.url, limit=10, window=10))
    async with http.post(app.base_url + "/api/proxy/refuse", json={}) as response:
        assert response.status == 422
        assert response.headers["RateLimit-Remaining"] == "9"
        assert response.headers["RateLimit-Policy"] == '"default";q=10;w=10'
    status, headers, body = await get(http, app, "/api/proxy/no-such-route")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert headers["RateLimit-Remaining"] == "8"  # probing unknown routes is counted too


async def test_the_window_slides(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    settings = limiter_settings(redis_server.url, limit=10, window=2)
    apps = await replicas(settings, settings)
    loop = asyncio.get_running_loop()

    first = await burst(http, apps, 5)
    first_done = loop.time()
    assert [a[0] for a in first] == [200] * 5
    await asyncio.sleep(1.0)
    second = await burst(http, apps, 5)
    assert [a[0] for a in second] == [200] * 5
    eleventh = await get(http, apps[0])
    assert_limited(eleventh, limit=10, window=2)
    assert int(eleventh[1]["Retry-After"]) == 1  # the first five leave within a second

    # The first five have left the window, the second five have not: five slots, not ten.
    await asyncio.sleep(first_done + 2.1 - loop.time())
    third = await burst(http, apps, 6)
    assert sorted(a[0] for a in third) == [200] * 5 + [429]


# --- who is counted ---------------------------------------------------------------------------


async def test_admin_token_bypasses_and_a_wrong_one_does_not(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    settings = limiter_settings(
        redis_server.url, limit=3, window=10, admin_token=SecretStr(ADMIN_TOKEN)
    )
    apps = await replicas(settings, settings)
    before = snapshot()

    for answer in await burst(http, apps, 6, X_Admin_Token=ADMIN_TOKEN):
        assert answer[0] == 200
        assert answer[1]["RateLimit-Policy"] == '"default";q=3;w=10'
        assert "RateLimit-Remaining" not in answer[1]
    # Bypassed requests were not counted: the whole budget is still there.
    assert sorted(a[0] for a in await burst(http, apps, 4)) == [200, 200, 200, 429]
    for wrong in ("", "wrong", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", ADMIN_TOKEN.upper()):
        assert (await get(http, apps[0], X_Admin_Token=wrong))[0] == 429
    assert (await get(http, apps[1], X_Admin_Token=ADMIN_TOKEN))[0] == 200
    assert delta(before) == {"bypassed": 7, "allowed": 3, "limited": 6}


async def test_admin_token_rotation_accepts_both_tokens_and_nothing_else(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    next_token = "test-admin-token-next-8d2e41"
    settings = limiter_settings(
        redis_server.url,
        limit=1,
        window=10,
        admin_token=SecretStr(ADMIN_TOKEN),
        admin_token_next=SecretStr(next_token),
    )
    (app,) = await replicas(settings)
    before = snapshot()
    for token in (ADMIN_TOKEN, next_token, ADMIN_TOKEN, next_token):
        assert (await get(http, app, X_Admin_Token=token))[0] == 200
    assert (await get(http, app))[0] == 200  # the one counted request of the budget
    for wrong in ("wrong", next_token[:-1], ADMIN_TOKEN + next_token, next_token.upper()):
        assert (await get(http, app, X_Admin_Token=wrong))[0] == 429
    assert delta(before) == {"bypassed": 4, "allowed": 1, "limited": 4}

    # Promoted: the old token is gone, the new one alone bypasses.
    promoted = settings.model_copy(
        update={"admin_token": SecretStr(next_token), "admin_token_next": None}
    )
    (after,) = await replicas(promoted)
    assert (await get(http, after, X_Admin_Token=next_token))[0] == 200
    assert (await get(http, after, X_Admin_Token=ADMIN_TOKEN))[0] == 429


async def test_no_admin_token_configured_means_no_bypass(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    (app,) = await replicas(limiter_settings(redis_server.url, limit=1, window=10))
    assert (await get(http, app, X_Admin_Token="anything"))[0] == 200
    assert (await get(http, app, X_Admin_Token="anything"))[0] == 429


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    untrusting = limiter_settings(redis_server.url, limit=2, window=10)
    # The same Redis keys, but this replica sits behind a proxy at 127.0.0.1.
    trusting = untrusting.model_copy(update={"trusted_proxies": [ip_network("127.0.0.1/32")]})
    direct, behind_proxy = await replicas(untrusting, trusting)

    assert [(await get(http, direct))[0] for _ in range(2)] == [200, 200]
    # Forged headers from an untrusted peer change nothing: 127.0.0.1's budget is spent.
    assert (await get(http, direct, X_Forwarded_For="198.51.100.7"))[0] == 429
    assert (await get(http, direct, Forwarded="for=198.51.100.8"))[0] == 429
    assert (await get(http, direct, X_User_Id="u-1"))[0] == 429

    # From the trusted proxy: the right-most untrusted hop is the client, with its own budget.
    assert (await get(http, behind_proxy))[0] == 429  # no header: the proxy itself, spent
    hop = "198.51.100.7"
    assert (await get(http, behind_proxy, X_Forwarded_For=hop))[0] == 200
    assert (await get(http, behind_proxy, X_Forwarded_For=f"203.0.113.1, {hop}"))[0] == 200
    assert (await get(http, behind_proxy, X_Forwarded_For=f"203.0.113.2, {hop}"))[0] == 429
    assert (await get(http, behind_proxy, X_User_Id="u-1"))[0] == 200


# --- Redis trouble ----------------------------------------------------------------------------


async def test_script_flushed_from_redis_is_loaded_again(
    redis_server: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    (app,) = await replicas(limiter_settings(redis_server.url, limit=5, window=10))
    before = snapshot()
    assert (await get(http, app))[1]["RateLimit-Remaining"] == "4"
    admin = create_redis(redis_server.url, 2.0)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    status, headers, _ = await get(http, app)
    assert status == 200
    assert headers["RateLimit-Remaining"] == "3"  # still the shared window, not the fallback
    assert delta(before) == {"allowed": 2}


async def wait_until_shared(http: aiohttp.ClientSession, apps: list[RunningApp]) -> None:
    """Until every replica decides with Redis again (probing with a client of its own)."""
    for n, app in enumerate(apps):

        async def shared(app: RunningApp = app, n: int = n) -> bool:
            before = snapshot()
            await get(http, app, X_Forwarded_For=f"192.0.2.{n + 1}")
            return set(delta(before)) <= {"allowed", "limited"}

        await wait_for(shared, timeout=10.0, interval=0.1)


async def test_redis_down_falls_back_per_replica_then_shared_limits_resume(
    own_redis: RedisServer,
    replicas: Replicas,
    http: aiohttp.ClientSession,
    logs: list[MutableMapping[str, Any]],
) -> None:
    settings = limiter_settings(own_redis.url, limit=10, window=10, **BEHIND_PROXY)
    apps = await replicas(settings, settings)
    assert (await get(http, apps[0], X_Forwarded_For="198.51.100.1"))[0] == 200

    own_redis.stop()
    before = snapshot()
    fallback = [await burst(http, [app], 15, X_Forwarded_For="198.51.100.1") for app in apps]
    for per_replica in fallback:
        # Limited by each replica alone (the one request admitted by Redis is not known here).
        assert sorted(a[0] for a in per_replica) == [200] * 10 + [429] * 5
        for answer in per_replica:
            if answer[0] == 429:
                assert_limited(answer, limit=10, window=10)
    assert delta(before) == {"fallback_allowed": 20, "fallback_limited": 10}
    # One warning per replica for 30 fallback decisions, not one per request.
    assert [e["log_level"] for e in logs if "rate limiter" in e["event"]] == ["warning"] * 2

    own_redis.start()
    await wait_until_shared(http, apps)
    resumed = [e for e in logs if e["event"].startswith("rate limiter: redis answers again")]
    assert len(resumed) == 2
    before = snapshot()
    answers = await burst(http, apps, 50, X_Forwarded_For="198.51.100.2")
    assert sorted(a[0] for a in answers) == [200] * 10 + [429] * 40
    assert delta(before) == {"allowed": 10, "limited": 40}


async def test_frozen_redis_costs_a_bounded_wait_not_an_error(
    own_redis: RedisServer, replicas: Replicas, http: aiohttp.ClientSession
) -> None:
    settings = limiter_settings(
        own_redis.url, limit=10, window=10, rate_limit_redis_timeout=0.1, **BEHIND_PROXY
    )
    (app,) = await replicas(settings)
    client = "198.51.100.3"
    assert (await get(http, app, X_Forwarded_For=client))[0] == 200  # connected, script loaded
    assert own_redis.proc is not None
    loop = asyncio.get_running_loop()

    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # Redis takes the bytes and never answers
    try:
        before = snapshot()
        started = loop.time()
        status, headers, _ = await get(http, app, X_Forwarded_For=client)
        assert loop.time() - started < 0.5
        assert status == 200
        assert headers["RateLimit-Remaining"] == "9"  # the fallback's own count
        assert delta(before) == {"fallback_allowed": 1}
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)

    await wait_until_shared(http, [app])
    status, headers, _ = await get(http, app, X_Forwarded_For=client)
    assert status == 200
    # Redis's count again: 8 left, or 7 when Redis, once awake, ran the command whose answer
    # we stopped waiting for (a timed-out request errs on the side of being counted).
    assert headers["RateLimit-Remaining"] in {"7", "8"}
