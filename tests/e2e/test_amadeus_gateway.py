"""Issue 6 end to end: the gateway's Amadeus routes, through NATS, the amadeus-proxy and the
Amadeus double, with real NATS and Redis.

- Two gateway *processes* sharing Redis admit exactly 10 of 50 concurrent requests from one
  client, answer the other 40 with 429 and both rate-limit header families, admit again once
  the window slid, let the admin token through and a forged X-Forwarded-For not.
- With the gateways' Redis stopped, each gateway limits alone and nothing is a 500; once Redis
  is back, the shared limit holds again.
- Invalid searches are a 422 naming the field, and Amadeus is never called.
- Booking: same key and body → one order and the same answer, marked replayed; same key,
  other body → 422; two at once → one 201 and one 409; Amadeus's 429 → our 429 + Retry-After;
  the booking's user is the one a trusted proxy names, never a header from anyone else.

The proxy and (except for the first test) the gateways are built by their own factories in
this process; every test has Redis key prefixes of its own.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from axiom_amadeus_proxy.app import bookings_db_key
from axiom_amadeus_proxy.app import create_app as create_proxy
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.ratelimit_settings import RateLimitRule
from axiom_gateway.settings import GatewaySettings
from axiom_shared.schemas import utcnow
from deploy.local.processes import ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port
from tests.fixtures.amadeus import AmadeusSandbox
from tests.fixtures.infra import RunningApp, start_app, wait_for

pytestmark = pytest.mark.e2e

SEARCH = "/api/proxy/amadeus/search"
BOOK = "/api/proxy/amadeus/book"
ROUTE = "/api/proxy/"
ADMIN_TOKEN = "e2e-admin-token-7d41a0"
DEPART = (utcnow().date() + timedelta(days=30)).isoformat()
#: The shared window of the process test: short, so that the test sees it slide.
WINDOW = 4

Answer = tuple[int, dict[str, str], Any]


def search_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "originLocationCode": "CAI",
        "destinationLocationCode": "JED",
        "departureDate": DEPART,
        "adults": 1,
    }
    body.update(changes)
    return body


def traveler(first_name: str = "AMINA", traveler_id: str = "1") -> dict[str, Any]:
    return {
        "id": traveler_id,
        "dateOfBirth": "1990-04-12",
        "name": {"firstName": first_name, "lastName": "HASSAN"},
        "gender": "FEMALE",
        "contact": {"emailAddress": "amina@example.com"},
    }


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """What the services log in this process (and nothing printed to a closed stream)."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
async def proxy(
    nats_server: NatsServer,
    redis_server: RedisServer,
    amadeus_sandbox: AmadeusSandbox,
    tmp_path: Path,
) -> AsyncIterator[RunningApp]:
    """The amadeus-proxy in front of this test's double; no pacing (the double has no limit)."""
    settings = AmadeusProxySettings.load(
        **nats_server.login("amadeus-proxy"),
        redis_url=redis_server.url,
        bookings_db_url=f"file:{tmp_path / 'bookings.db'}",
        port=0,
        amadeus_base_url=amadeus_sandbox.base_url,
        amadeus_client_id=amadeus_sandbox.client_id,
        amadeus_client_secret=amadeus_sandbox.client_secret,
        amadeus_redis_prefix=f"e2e:{uuid.uuid4().hex}",
        amadeus_rate_per_second=0,
        amadeus_min_interval=0.0,
        amadeus_timeout=3.0,
        amadeus_token_wait=3.0,
        amadeus_retry_base_delay=0.01,
        amadeus_booking_stale_after=30.0,
    )
    running = await start_app(create_proxy(settings))
    try:
        yield running
    finally:
        await running.server.close()


GatewayFactory = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def gateways(
    nats_server: NatsServer, redis_server: RedisServer
) -> AsyncIterator[GatewayFactory]:
    """`await gateways(limit=.., **settings)`: a gateway app in this process; the gateways of
    one test share a Redis key prefix, so they share their clients' budgets."""
    prefix = f"e2e:ratelimit:{uuid.uuid4().hex}"
    running: list[RunningApp] = []

    async def start(limit: int = 1000, window: float = 10, **overrides: Any) -> RunningApp:
        values: dict[str, Any] = {
            **nats_server.login("gateway"),
            "redis_url": redis_server.url,
            "port": 0,
            "rate_limits": [RateLimitRule(prefix=ROUTE, limit=limit, window=window)],
            "rate_limit_redis_prefix": prefix,
            "amadeus_request_timeout": 10.0,
        }
        values.update(overrides)
        app = await start_app(create_gateway(GatewaySettings.load(**values)))
        running.append(app)
        return app

    yield start
    for app in reversed(running):
        await app.server.close()


@pytest.fixture
def gateway_redis() -> Iterator[RedisServer]:
    """A Redis for the gateways alone, so that a test can stop it (the proxy keeps its own)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


# --- helpers --------------------------------------------------------------------------------


async def post(
    http: aiohttp.ClientSession,
    base_url: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> Answer:
    async with http.post(base_url + path, json=body, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.json()


async def burst(
    http: aiohttp.ClientSession,
    base_urls: list[str],
    count: int,
    headers: dict[str, str] | None = None,
) -> list[Answer]:
    """`count` searches at once, spread over the gateways in turn."""
    return list(
        await asyncio.gather(
            *(
                post(http, base_urls[n % len(base_urls)], SEARCH, search_body(), headers)
                for n in range(count)
            )
        )
    )


def statuses(answers: Iterable[Answer]) -> list[int]:
    return sorted(answer[0] for answer in answers)


def assert_limited(answer: Answer, limit: int, window: int) -> None:
    """Our 429: the error format, Retry-After, and both rate-limit header families."""
    status, headers, body = answer
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert 1 <= int(headers["Retry-After"]) <= window
    assert headers["RateLimit-Policy"] == f'"default";q={limit};w={window}'
    assert headers["RateLimit"] == f'"default";r=0;t={headers["RateLimit-Reset"]}'
    assert headers["RateLimit-Limit"] == str(limit)
    assert headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["RateLimit-Reset"]) <= window


def assert_searched(answer: Answer) -> None:
    """Admitted: Amadeus's own answer shape, with the rate-limit headers."""
    status, headers, body = answer
    assert status == 200, body
    assert set(body) >= {"meta", "data", "dictionaries"}
    assert body["data"]
    assert body["data"][0]["type"] == "flight-offer"
    assert "RateLimit-Remaining" in headers
    assert "Retry-After" not in headers


def decisions() -> dict[str, float]:
    names = ("allowed", "limited", "bypassed", "fallback_allowed", "fallback_limited")
    return {
        name: REGISTRY.get_sample_value(
            "axiom_rate_limit_decisions_total", {"route": ROUTE, "decision": name}
        )
        or 0.0
        for name in names
    }


def changed(before: dict[str, float]) -> set[str]:
    return {name for name, value in decisions().items() if value != before[name]}


# --- (1) the shared limit across two gateway processes ---------------------------------------


async def test_two_gateway_processes_admit_exactly_ten_of_fifty_then_again_after_the_window(
    nats_server: NatsServer,
    redis_server: RedisServer,
    proxy: RunningApp,
    amadeus_sandbox: AmadeusSandbox,
    http: aiohttp.ClientSession,
) -> None:
    env = {
        **nats_server.client_env(),
        "REDIS_URL": redis_server.url,
        "RATE_LIMITS": json.dumps([{"prefix": ROUTE, "limit": 10, "window": WINDOW}]),
        "RATE_LIMIT_REDIS_PREFIX": f"e2e:ratelimit:{uuid.uuid4().hex}",
        "RATE_LIMIT_REDIS_TIMEOUT": "0.5",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "AMADEUS_REQUEST_TIMEOUT": "10",
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_TIMEOUT": "3",
    }
    children: list[ChildProcess] = [
        service_process("gateway", env, port=free_port(), sink=quiet) for _ in range(2)
    ]
    loop = asyncio.get_running_loop()
    try:
        for child in children:
            await child.start()
        await asyncio.gather(*(child.wait_healthy(20) for child in children))
        urls = [child.base_url for child in children]

        answers = await burst(http, urls, 50)
        burst_done = loop.time()

        admitted = [a for a in answers if a[0] == 200]
        assert statuses(answers) == [200] * 10 + [429] * 40
        for answer in admitted:
            assert_searched(answer)
        # One shared, atomic count: each admitted request saw a different remaining budget.
        assert sorted(int(a[1]["RateLimit-Remaining"]) for a in admitted) == list(range(10))
        for answer in answers:
            if answer[0] == 429:
                assert_limited(answer, limit=10, window=WINDOW)
        assert (await amadeus_sandbox.stats())["search_requests"] == 10

        # A forged X-Forwarded-For from a peer we do not trust buys no fresh budget.
        forged = {"X-Forwarded-For": "198.51.100.77"}
        for url in urls:
            assert_limited(await post(http, url, SEARCH, search_body(), forged), 10, WINDOW)
        # A wrong admin token is nothing; the right one passes, uncounted.
        wrong = {"X-Admin-Token": ADMIN_TOKEN + "x"}
        assert (await post(http, urls[0], SEARCH, search_body(), wrong))[0] == 429
        status, headers, body = await post(
            http, urls[1], SEARCH, search_body(), {"X-Admin-Token": ADMIN_TOKEN}
        )
        assert status == 200
        assert body["data"]
        assert headers["RateLimit-Policy"] == f'"default";q=10;w={WINDOW}'
        assert "RateLimit-Remaining" not in headers
        assert (await amadeus_sandbox.stats())["search_requests"] == 11

        # Every admission has left the window: the budget is whole again, and exact again.
        await asyncio.sleep(max(burst_done + WINDOW + 0.2 - loop.time(), 0))
        again = await burst(http, urls, 12)
        assert statuses(again) == [200] * 10 + [429] * 2
    finally:
        await asyncio.gather(*(child.terminate(5) for child in children))
    assert all(child.returncode == 0 for child in children)


# --- (4) Redis down: each gateway alone, never a 500 -----------------------------------------


async def test_redis_down_each_gateway_limits_alone_and_shared_limits_resume(
    gateway_redis: RedisServer,
    proxy: RunningApp,
    gateways: GatewayFactory,
    http: aiohttp.ClientSession,
) -> None:
    settings = {
        "redis_url": gateway_redis.url,
        "trusted_proxies": "127.0.0.1",  # the test plays the proxy: clients by X-Forwarded-For
        "rate_limit_redis_timeout": 0.3,
        "rate_limit_redis_retry_interval": 0.2,
    }
    apps = [await gateways(limit=10, **settings) for _ in range(2)]
    urls = [app.base_url for app in apps]
    client = {"X-Forwarded-For": "198.51.100.1"}
    assert_searched(await post(http, urls[0], SEARCH, search_body(), client))

    gateway_redis.stop()
    before = decisions()
    per_gateway = [await burst(http, [url], 15, client) for url in urls]
    for answers in per_gateway:
        # Each gateway counts alone (the one request Redis admitted is unknown to it).
        assert statuses(answers) == [200] * 10 + [429] * 5
        for answer in answers:
            if answer[0] == 200:
                assert_searched(answer)
            else:
                assert_limited(answer, limit=10, window=10)
    assert changed(before) == {"fallback_allowed", "fallback_limited"}

    gateway_redis.start()
    for n, url in enumerate(urls):
        probe = {"X-Forwarded-For": f"192.0.2.{n + 1}"}

        async def shared(url: str = url, probe: dict[str, str] = probe) -> bool:
            before = decisions()
            status, _, _ = await post(http, url, SEARCH, {}, probe)  # a 422, but counted
            assert status == 422
            return changed(before) <= {"allowed", "limited"}

        await wait_for(shared, timeout=10.0, interval=0.1)

    answers = await burst(http, urls, 30, {"X-Forwarded-For": "198.51.100.2"})
    assert statuses(answers) == [200] * 10 + [429] * 20


# --- (5) invalid searches never reach Amadeus ------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"originLocationCode": "PA1"}, "originLocationCode"),
        ({"destinationLocationCode": "jed"}, "destinationLocationCode"),
        ({"departureDate": "2020-01-01"}, "departureDate"),
        ({"adults": 0}, "adults"),
        ({"adults": 10}, "adults"),
        ({"adults": 1, "infants": 2}, "infants"),
        ({"includedAirlineCodes": "MS", "excludedAirlineCodes": "SV"}, "excludedAirlineCodes"),
        ({"schema": "amadeus.search.input/1"}, "schema"),
    ],
)
async def test_invalid_search_is_422_naming_the_field_with_no_upstream_call(
    proxy: RunningApp,
    gateways: GatewayFactory,
    amadeus_sandbox: AmadeusSandbox,
    http: aiohttp.ClientSession,
    change: dict[str, Any],
    field: str,
) -> None:
    gateway = await gateways()
    status, headers, body = await post(http, gateway.base_url, SEARCH, search_body(**change))
    assert status == 422
    assert body["error"]["code"] == "validation_error"
    assert field in [detail["field"] for detail in body["error"]["details"]]
    assert "RateLimit-Remaining" in headers  # counted all the same
    assert all(value == 0 for value in (await amadeus_sandbox.stats()).values())


async def test_amadeus_429_is_passed_on_with_retry_after(
    proxy: RunningApp,
    gateways: GatewayFactory,
    amadeus_sandbox: AmadeusSandbox,
    http: aiohttp.ClientSession,
) -> None:
    gateway = await gateways()
    await amadeus_sandbox.set_faults(force_429=1)
    status, headers, body = await post(http, gateway.base_url, SEARCH, search_body())
    assert status == 429
    assert body["error"]["code"] == "upstream_rate_limited"
    assert set(body["error"]) == {"code", "message", "details"}
    assert int(headers["Retry-After"]) >= 1
    assert (await amadeus_sandbox.stats())["search_requests"] == 1  # not retried
    assert_searched(await post(http, gateway.base_url, SEARCH, search_body()))


# --- (3) booking ----------------------------------------------------------------------------


async def an_offer(http: aiohttp.ClientSession, gateway: RunningApp) -> dict[str, Any]:
    status, _, body = await post(http, gateway.base_url, SEARCH, search_body(max=1))
    assert status == 200
    offer: dict[str, Any] = body["data"][0]
    return offer


async def test_same_key_replays_one_order_and_another_body_is_422(
    proxy: RunningApp,
    gateways: GatewayFactory,
    amadeus_sandbox: AmadeusSandbox,
    http: aiohttp.ClientSession,
) -> None:
    gateway = await gateways()
    booking = {"flightOffers": [await an_offer(http, gateway)], "travelers": [traveler()]}
    key = f"e2e-{uuid.uuid4().hex}"

    first = await post(http, gateway.base_url, BOOK, booking, {"Idempotency-Key": key})
    # The same key, quoted this time: it is the same key.
    again = await post(http, gateway.base_url, BOOK, booking, {"Idempotency-Key": f'"{key}"'})
    other_body = booking | {"travelers": [traveler("SARA")]}
    other = await post(http, gateway.base_url, BOOK, other_body, {"Idempotency-Key": key})

    assert first[0] == 201, first[2]
    assert "Idempotent-Replayed" not in first[1]
    assert first[2]["data"]["type"] == "flight-order"
    assert first[2]["data"]["id"]
    assert again[0] == 201
    assert again[1]["Idempotent-Replayed"] == "true"
    assert again[2] == first[2]
    assert other[0] == 422
    assert other[2]["error"]["code"] == "idempotency_key_reused"
    stats = await amadeus_sandbox.stats()
    assert (stats["order_requests"], stats["orders_created"]) == (1, 1)


async def test_concurrent_bookings_with_one_key_make_one_201_and_one_409(
    proxy: RunningApp,
    gateways: GatewayFactory,
    amadeus_sandbox: AmadeusSandbox,
    http: aiohttp.ClientSession,
) -> None:
    gateway = await gateways()
    booking = {"flightOffers": [await an_offer(http, gateway)], "travelers": [traveler()]}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    await amadeus_sandbox.set_faults(latency_seconds=0.3)

    answers = await asyncio.gather(
        post(http, gateway.base_url, BOOK, booking, headers),
        post(http, gateway.base_url, BOOK, booking, headers),
    )

    assert statuses(answers) == [201, 409]
    (conflict,) = [a for a in answers if a[0] == 409]
    assert conflict[2]["error"]["code"] == "booking_in_progress"
    assert conflict[1]["Retry-After"] == "1"  # the proxy's header, carried over NATS
    assert (await amadeus_sandbox.stats())["orders_created"] == 1


async def test_booking_needs_a_good_key_and_body_before_anything_is_sent(
    proxy: RunningApp,
    gateways: GatewayFactory,
    amadeus_sandbox: AmadeusSandbox,
    http: aiohttp.ClientSession,
) -> None:
    gateway = await gateways()
    offer = await an_offer(http, gateway)
    booking = {"flightOffers": [offer], "travelers": [traveler()]}

    missing = await post(http, gateway.base_url, BOOK, booking)
    assert missing[0] == 400
    assert missing[2]["error"]["code"] == "idempotency_key_required"
    assert missing[2]["error"]["details"][0]["field"] == "Idempotency-Key"
    for bad_key in ('""', "k" * 256):
        answer = await post(http, gateway.base_url, BOOK, booking, {"Idempotency-Key": bad_key})
        assert answer[0] == 400
        assert answer[2]["error"]["code"] == "invalid_idempotency_key"

    key = {"Idempotency-Key": uuid.uuid4().hex}
    invalid = [
        (booking | {"travelers": [traveler(), traveler("SARA")]}, "travelers"),
        (booking | {"flightOffers": [offer | {"type": "hotel-offer"}]}, "flightOffers.0"),
        (booking | {"travelers": [traveler() | {"dateOfBirth": "2999-01-01"}]}, "travelers.0"),
        (booking | {"idempotency_key": "in-the-body"}, "idempotency_key"),
        ({"travelers": [traveler()]}, "flightOffers"),
    ]
    for body, field in invalid:
        status, _, error = await post(http, gateway.base_url, BOOK, body, key)
        assert status == 422, (field, error)
        fields = [d["field"] or "" for d in error["error"]["details"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    stats = await amadeus_sandbox.stats()
    assert (stats["pricing_requests"], stats["order_requests"]) == (0, 0)


async def test_openapi_documents_both_routes(
    gateways: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await gateways()
    async with http.get(gateway.base_url + "/openapi.json") as response:
        spec = await response.json()
    search = spec["paths"][SEARCH]["post"]
    book = spec["paths"][BOOK]["post"]
    assert {"200", "422", "429"} <= set(search["responses"])
    assert {"201", "400", "409", "422", "429"} <= set(book["responses"])
    (key,) = [p for p in book["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["required"] is True
    assert "Idempotent-Replayed" in book["responses"]["201"]["headers"]
    body_schema = spec["components"]["schemas"]["FlightSearchBody"]
    assert "schema" not in body_schema["properties"]
    assert "adults" in body_schema["required"]


async def booked_by(proxy: RunningApp, key: str) -> str | None:
    row = await proxy[bookings_db_key].fetch_one(
        "SELECT user_id FROM agent_transactions WHERE idempotency_key = ?", [key]
    )
    assert row is not None
    user: str | None = row["user_id"]
    return user


async def test_the_booking_user_is_the_one_our_trusted_proxy_names(
    proxy: RunningApp, gateways: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    behind_proxy = await gateways(trusted_proxies="127.0.0.1")
    direct = await gateways()
    booking = {"flightOffers": [await an_offer(http, direct)], "travelers": [traveler()]}
    keys = [uuid.uuid4().hex, uuid.uuid4().hex]
    for gateway, key in zip((behind_proxy, direct), keys, strict=True):
        headers = {"Idempotency-Key": key, "X-User-Id": "user-42"}
        assert (await post(http, gateway.base_url, BOOK, booking, headers))[0] == 201
    assert await booked_by(proxy, keys[0]) == "user-42"
    assert await booked_by(proxy, keys[1]) is None  # anyone may write that header
