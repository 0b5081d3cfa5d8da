"""The amadeus-proxy against real NATS and Redis and the Amadeus double: validation before any
upstream call, one token refresh across replicas, pacing inside Amadeus's quota, retries, and
booking idempotency (including a crash between Amadeus's answer and our write)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.micro.request import ERROR_CODE_HEADER

from axiom_amadeus_proxy.app import (
    bookings_db_key,
    bookings_key,
    bookings_migrations,
    create_app,
)
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_shared.db import Database, IntegrityError, open_database
from axiom_shared.errors import ApiError, ErrorBody
from axiom_shared.migrations import migrate, migrate_down
from axiom_shared.nats import request
from axiom_shared.schemas import (
    FlightBookInput,
    FlightBookResult,
    FlightSearchInput,
    FlightSearchResult,
    Traveler,
    utcnow,
)
from axiom_shared.service import redis_key
from axiom_shared.topology import AMADEUS_BOOK, AMADEUS_SEARCH
from sandbox.amadeus import AmadeusSandboxConfig
from sandbox.amadeus.app import state_key
from sandbox.infra import NatsServer, RedisServer
from tests.fixtures.amadeus import AmadeusSandbox, sandbox_test_config
from tests.fixtures.infra import RunningApp, start_app

pytestmark = pytest.mark.connected

SEARCH_PATH = "/v2/shopping/flight-offers"
DEPART = (utcnow().date() + timedelta(days=30)).isoformat()
TIMEOUT = 15.0

ProxyFactory = Callable[..., AbstractAsyncContextManager[RunningApp]]


@pytest.fixture
def proxy(
    nats_server: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[RunningApp]]:
    """Start an amadeus-proxy (by its own factory) against a sandbox; replicas made by one
    test share Redis keys (the prefix is per test) and the bookings DB."""
    prefix = f"test:{uuid.uuid4().hex}"

    @asynccontextmanager
    async def start(sandbox: AmadeusSandbox, **overrides: Any) -> AsyncIterator[RunningApp]:
        values: dict[str, Any] = {
            **nats_server.login("amadeus-proxy"),
            "redis_url": redis_server.url,
            "bookings_db_url": f"file:{tmp_path / 'bookings.db'}",
            "port": 0,
            "amadeus_base_url": sandbox.base_url,
            "amadeus_client_id": sandbox.client_id,
            "amadeus_client_secret": sandbox.client_secret,
            "amadeus_redis_prefix": prefix,
            "amadeus_rate_per_second": 0,
            "amadeus_min_interval": 0.0,
            "amadeus_timeout": 3.0,
            "amadeus_token_wait": 3.0,
            "amadeus_retry_base_delay": 0.01,
            "amadeus_booking_stale_after": 30.0,
        }
        values.update(overrides)
        running = await start_app(create_app(AmadeusProxySettings.load(**values)))
        try:
            yield running
        finally:
            await running.server.close()

    return start


def search_input(**overrides: Any) -> FlightSearchInput:
    values: dict[str, Any] = {
        "originLocationCode": "CAI",
        "destinationLocationCode": "JED",
        "departureDate": DEPART,
        "adults": 1,
    }
    values.update(overrides)
    return FlightSearchInput(**values)


async def search(nc: NATS, query: FlightSearchInput | None = None) -> FlightSearchResult:
    return await request(
        nc, AMADEUS_SEARCH, query or search_input(), FlightSearchResult, timeout=TIMEOUT
    )


async def raw_error(nc: NATS, subject: str, body: dict[str, Any]) -> tuple[int, ErrorBody]:
    """Send a body our own models would refuse to build; return the error status and body.
    Like axiom_shared.nats.request, "no responders" (not delivered at all) is asked again."""
    for attempt in range(5):
        try:
            reply = await nc.request(subject, json.dumps(body).encode(), timeout=TIMEOUT)
            break
        except NoRespondersError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    assert code, f"expected an error, got {reply.data[:200]!r}"
    return int(code), ErrorBody.model_validate_json(reply.data)


async def api_error(call: Awaitable[Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


# --- search ---------------------------------------------------------------------------------


async def test_100_searches_over_two_replicas_refresh_the_token_once_and_stay_in_quota(
    amadeus_sandbox_factory: Callable[
        [AmadeusSandboxConfig], AbstractAsyncContextManager[AmadeusSandbox]
    ],
    proxy: ProxyFactory,
    nats_client: NATS,
) -> None:
    # The double enforces its rate limit (50 per second, 10 ms apart); our pacer stays a
    # margin inside it (40 per second, 20 ms apart): everything here (both replicas, the
    # double, 100 clients) shares one event loop on a loaded 2-core machine, so the gap the
    # double measures can be shorter than the one we reserved. 100 unpaced requests at once
    # would still be far above the double's limit.
    config = sandbox_test_config(rate_limit_per_second=50, min_interval_seconds=0.01)
    pacing = {
        "amadeus_rate_per_second": 40,
        "amadeus_min_interval": 0.02,
        # Everything (both replicas, the double, 100 clients) shares one event loop here, so
        # the jitter between our send and the double's clock is larger than in production.
        # 40 ms: a whole suite on 2 cores can stall the shared loop for tens of ms, and the
        # double then sees two sends closer than its 10 ms (seen in full runs at 15 ms).
        "amadeus_pacing_guard": 0.04,
        "amadeus_pacing_max_wait": 10.0,
    }
    async with (
        amadeus_sandbox_factory(config) as sandbox,
        proxy(sandbox, **pacing),
        proxy(sandbox, **pacing),
    ):
        answers = await asyncio.gather(*(search(nats_client) for _ in range(100)))
        assert all(a.amadeus_response["data"] for a in answers)
        stats = await sandbox.stats()
        assert stats["token_requests"] == 1
        assert stats["search_requests"] == 100
        assert stats["rate_limited_429"] == 0

        await sandbox.set_faults(expire_tokens=True)
        answers = await asyncio.gather(*(search(nats_client) for _ in range(100)))
        assert all(a.amadeus_response["data"] for a in answers)
        stats = await sandbox.stats()
        assert stats["token_requests"] == 2  # exactly one refresh after the expiry
        assert stats["unauthorized_401"] >= 1
        assert stats["rate_limited_429"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"originLocationCode": "PA1"}, "originLocationCode"),
        ({"destinationLocationCode": "CAI"}, "destinationLocationCode"),
        ({"departureDate": "2020-01-01"}, "departureDate"),
        ({"departureDate": "2026-02-30"}, "departureDate"),
        ({"returnDate": "2020-01-01"}, "returnDate"),
        ({"adults": 0}, "adults"),
        ({"adults": 10}, "adults"),
        ({"adults": 1, "infants": 2}, "infants"),
        ({"adults": 5, "children": 5}, "children"),
        ({"includedAirlineCodes": "MS", "excludedAirlineCodes": "SV"}, "excludedAirlineCodes"),
        ({"travelClass": "STEERAGE"}, "travelClass"),
        ({"max": 251}, "max"),
        ({"maxPrice": 0}, "maxPrice"),
        ({"currencyCode": "eur"}, "currencyCode"),
        ({"cabin": "ECONOMY"}, "cabin"),
    ],
)
async def test_invalid_search_is_422_naming_the_field_and_never_reaches_amadeus(
    amadeus_sandbox: AmadeusSandbox,
    proxy: ProxyFactory,
    nats_client: NATS,
    change: dict[str, Any],
    field: str,
) -> None:
    body = search_input().model_dump(by_alias=True) | change
    async with proxy(amadeus_sandbox):
        status, error = await raw_error(nats_client, AMADEUS_SEARCH, body)
    assert status == 422
    assert error.error.code == "validation_error"
    assert field in [d.field for d in error.error.details]
    assert all(v == 0 for v in (await amadeus_sandbox.stats()).values())


async def test_expired_token_mid_life_is_invalidated_and_retried_once(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    async with proxy(amadeus_sandbox):
        await search(nats_client)
        await amadeus_sandbox.set_faults(expire_tokens=True)
        answer = await search(nats_client)
    assert answer.amadeus_response["data"]
    stats = await amadeus_sandbox.stats()
    assert stats["token_requests"] == 2
    assert stats["unauthorized_401"] == 1
    assert stats["search_requests"] == 3


async def test_a_cached_token_costs_no_redis_round_trip_per_search(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    """With pacing off, a search whose token this replica already holds reads nothing from
    Redis (counted by Redis itself). (A token expired at Amadeus is refreshed once across both
    replicas: test_100_searches_over_two_replicas_... above.)"""
    async with proxy(amadeus_sandbox) as first, proxy(amadeus_sandbox):
        redis = first[redis_key]
        # Requests go to either replica at random: after 20, both have read or fetched the
        # token (all 20 landing on one replica has a chance of 2 in a million).
        for _ in range(20):
            await search(nats_client)

        async def reads() -> int:
            stats = await redis.info("commandstats")
            return sum(
                int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                for name in ("get", "pttl", "evalsha", "eval", "set")
            )

        before = await reads()
        for _ in range(20):
            await search(nats_client)
        assert await reads() == before


async def test_amadeus_500_on_search_is_retried_with_backoff(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    async with proxy(amadeus_sandbox):
        await amadeus_sandbox.set_faults(fail_next={"count": 2, "path": SEARCH_PATH})
        answer = await search(nats_client)
        assert answer.amadeus_response["data"]
        assert (await amadeus_sandbox.stats())["search_requests"] == 3

        # Bounded: three attempts, then our 502.
        await amadeus_sandbox.reset()
        await amadeus_sandbox.set_faults(fail_next={"count": 10, "path": SEARCH_PATH})
        error = await api_error(search(nats_client))
        assert error.status == 502
        assert error.code == "upstream_error"
        assert (await amadeus_sandbox.stats())["search_requests"] == 3


async def test_amadeus_429_is_our_429_with_retry_after_and_not_retried(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    async with proxy(amadeus_sandbox):
        await search(nats_client)
        await amadeus_sandbox.set_faults(force_429=1)
        error = await api_error(search(nats_client))
    assert error.status == 429
    assert error.code == "upstream_rate_limited"
    assert error.headers.get("Retry-After") == "1"
    assert (await amadeus_sandbox.stats())["search_requests"] == 2


async def test_a_queue_longer_than_the_max_wait_is_429_without_an_upstream_call(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    # One request per second and no waiting allowed: of three at once, two are refused by us.
    async with proxy(amadeus_sandbox, amadeus_rate_per_second=1, amadeus_pacing_max_wait=0.0):
        outcomes = await asyncio.gather(
            *(search(nats_client) for _ in range(3)), return_exceptions=True
        )
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(refused) == 2
    assert all(e.status == 429 and int(e.headers["Retry-After"]) >= 1 for e in refused)
    assert (await amadeus_sandbox.stats())["search_requests"] == 1


# --- booking --------------------------------------------------------------------------------


def traveler(first_name: str = "AMINA") -> Traveler:
    return Traveler.model_validate(
        {
            "id": "1",
            "dateOfBirth": "1990-04-12",
            "name": {"firstName": first_name, "lastName": "HASSAN"},
            "gender": "FEMALE",
            "contact": {
                "emailAddress": "amina@example.com",
                "phones": [{"deviceType": "MOBILE", "countryCallingCode": "20", "number": "100"}],
            },
        }
    )


async def booking_input(
    nc: NATS, key: str | None = None, first_name: str = "AMINA"
) -> FlightBookInput:
    offers = (await search(nc, search_input(max=1))).amadeus_response["data"]
    return FlightBookInput(
        idempotency_key=key or uuid.uuid4().hex,
        user_id="user-1",
        flightOffers=offers[:1],
        travelers=[traveler(first_name)],
    )


async def book(nc: NATS, booking: FlightBookInput) -> FlightBookResult:
    return await request(nc, AMADEUS_BOOK, booking, FlightBookResult, timeout=TIMEOUT)


async def booking_row(app: RunningApp, key: str) -> dict[str, Any]:
    row = await app[bookings_db_key].fetch_one(
        "SELECT * FROM agent_transactions WHERE idempotency_key = ?", [key]
    )
    assert row is not None
    return dict(row)


async def test_same_key_same_body_replays_and_other_body_is_422(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    async with proxy(amadeus_sandbox) as app:
        booking = await booking_input(nats_client)
        first = await book(nats_client, booking)
        again = await book(nats_client, booking)
        other = booking.model_copy(update={"travelers": [traveler("SARA")]})
        error = await api_error(book(nats_client, other))
        row = await booking_row(app, booking.idempotency_key)

    assert not first.replayed
    assert again.replayed
    assert again.order_id == first.order_id
    assert again.amadeus_response == first.amadeus_response
    assert error.status == 422
    assert error.code == "idempotency_key_reused"
    stats = await amadeus_sandbox.stats()
    assert stats["order_requests"] == 1
    assert stats["orders_created"] == 1
    assert stats["pricing_requests"] == 1
    assert row["external_booking_ref"] == first.order_id
    assert row["booking_state"] == "completed"
    assert row["user_id"] == "user-1"
    assert row["amount_cents"] > 0


async def test_concurrent_same_key_books_once_and_the_other_gets_409(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    async with proxy(amadeus_sandbox):
        booking = await booking_input(nats_client)
        await amadeus_sandbox.set_faults(latency_seconds=0.3)
        outcomes = await asyncio.gather(
            book(nats_client, booking), book(nats_client, booking), return_exceptions=True
        )
    results = [o for o in outcomes if isinstance(o, FlightBookResult)]
    errors = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(results) == 1
    assert len(errors) == 1
    assert (errors[0].status, errors[0].code) == (409, "booking_in_progress")
    assert (await amadeus_sandbox.stats())["orders_created"] == 1


async def test_crash_after_amadeus_answered_never_books_twice(
    amadeus_sandbox: AmadeusSandbox,
    proxy: ProxyFactory,
    nats_client: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def crash(*_args: object) -> None:
        raise RuntimeError("simulated crash after the order was created")

    async with proxy(amadeus_sandbox) as app:
        booking = await booking_input(nats_client)
        # The process dies between Amadeus's answer and our write of it.
        with monkeypatch.context() as patch:
            patch.setattr(app[bookings_key], "_complete", crash)
            error = await api_error(book(nats_client, booking))
        assert error.status == 500

        # Soon after: the first attempt might still be running, so it is "in progress".
        error = await api_error(book(nats_client, booking))
        assert (error.status, error.code) == (409, "booking_in_progress")

        # Long after (the claim is older than any live booking): outcome unknown, for ever.
        await app[bookings_db_key].execute(
            "UPDATE agent_transactions SET updated_at = '2000-01-01T00:00:00.000+00:00'"
            " WHERE idempotency_key = ?",
            [booking.idempotency_key],
        )
        for _ in range(2):
            error = await api_error(book(nats_client, booking))
            assert (error.status, error.code) == (409, "booking_outcome_unknown")
        row = await booking_row(app, booking.idempotency_key)

    stats = await amadeus_sandbox.stats()
    assert stats["order_requests"] == 1
    assert stats["orders_created"] == 1
    assert row["booking_state"] == "outcome_unknown"
    # The order carries our row id, which is what an operator reconciles it by.
    (order,) = amadeus_sandbox.app[state_key].orders.orders.values()
    assert order["remarks"]["general"][0]["text"] == f"AXIOMID BOOKING {row['id'].upper()}"


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        ({"booking_failure_code": 34651}, 409, "segment_sell_failure"),
        ({"booking_failure_code": 36870}, 502, "booking_failed"),
        ({"booking_failure_code": 37200}, 409, "price_changed"),
        ({"pricing_price_discrepancy": True}, 409, "price_changed"),
    ],
)
async def test_amadeus_booking_errors_are_recorded_and_replayed(
    amadeus_sandbox: AmadeusSandbox,
    proxy: ProxyFactory,
    nats_client: NATS,
    failure: dict[str, Any],
    status: int,
    code: str,
) -> None:
    async with proxy(amadeus_sandbox) as app:
        booking = await booking_input(nats_client)
        await amadeus_sandbox.set_faults(**failure)
        first = await api_error(book(nats_client, booking))
        await amadeus_sandbox.set_faults(booking_failure_code=None, pricing_price_discrepancy=False)
        replay = await api_error(book(nats_client, booking))
        row = await booking_row(app, booking.idempotency_key)

    assert (first.status, first.code) == (status, code)
    assert (replay.status, replay.code, replay.message) == (status, code, first.message)
    assert row["booking_state"] == "failed"
    stats = await amadeus_sandbox.stats()
    assert stats["orders_created"] == 0
    assert stats["order_requests"] == (0 if "pricing_price_discrepancy" in failure else 1)


async def test_unreachable_amadeus_releases_the_claim_for_a_retry(
    amadeus_sandbox: AmadeusSandbox, proxy: ProxyFactory, nats_client: NATS
) -> None:
    async with proxy(amadeus_sandbox):
        booking = await booking_input(nats_client)
    # Pricing fails at every attempt (a 5xx before anything is booked) ...
    async with proxy(amadeus_sandbox) as app:
        await amadeus_sandbox.set_faults(
            fail_next={"count": 10, "path": "/v1/shopping/flight-offers/pricing"}
        )
        error = await api_error(book(nats_client, booking))
        assert error.status == 502
        assert (
            await app[bookings_db_key].fetch_one(
                "SELECT id FROM agent_transactions WHERE idempotency_key = ?",
                [booking.idempotency_key],
            )
            is None
        )
        # ... so the same key books once Amadeus is back.
        await amadeus_sandbox.set_faults(fail_next=None)
        result = await book(nats_client, booking)
    assert not result.replayed
    assert (await amadeus_sandbox.stats())["orders_created"] == 1


# --- Amadeus's JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("charset_parameter", [False, True], ids=["bare", "charset-utf-8"])
async def test_amadeus_json_is_read_with_or_without_a_charset_parameter(
    amadeus_sandbox: AmadeusSandbox,
    proxy: ProxyFactory,
    nats_client: NATS,
    charset_parameter: bool,
) -> None:
    """Amadeus sends application/json (token) and application/vnd.amadeus+json (API) with no
    parameter; something on the way may add "; charset=utf-8". Tokens, answers and error codes
    are read either way, as UTF-8 (the double sends non-ASCII as raw UTF-8)."""
    await amadeus_sandbox.set_faults(charset_parameter=charset_parameter)
    async with proxy(amadeus_sandbox):
        booked = await book(nats_client, await booking_input(nats_client, first_name="JOSÉ"))
        await amadeus_sandbox.set_faults(booking_failure_code=34651)
        refused = await api_error(book(nats_client, await booking_input(nats_client)))
        await amadeus_sandbox.set_faults(expire_tokens=True)
        searched = await search(nats_client)

    assert (await amadeus_sandbox.faults())["charset_parameter"] is charset_parameter
    order = booked.amadeus_response["data"]
    assert booked.order_id == order["id"]
    assert order["travelers"][0]["name"]["firstName"] == "JOSÉ"
    assert (refused.status, refused.code) == (409, "segment_sell_failure")
    assert searched.amadeus_response["data"]
    stats = await amadeus_sandbox.stats()
    # The 401 38190 was read: the token was dropped and fetched again, once.
    assert (stats["token_requests"], stats["unauthorized_401"]) == (2, 1)


# --- schema and secrets -----------------------------------------------------------------------


async def test_booking_migration_goes_down_and_up(tmp_path: Path) -> None:
    db = await open_database(f"file:{tmp_path / 'bookings.db'}")
    try:
        migrations = bookings_migrations()
        # Up to 0003, the migration under test here (later ones have tests of their own).
        assert await migrate(db, migrations, target=3) == [1, 2, 3]
        assert {"request_hash", "booking_state", "response_body"} <= await columns(db)
        assert await migrate_down(db, migrations, target=2) == [3]
        assert not {"request_hash", "booking_state", "claim_token"} & await columns(db)
        assert "idempotency_key" in await columns(db)
        assert await migrate(db, migrations, target=3) == [3]
        with pytest.raises(IntegrityError, match="CHECK"):
            await db.execute(
                "INSERT INTO agent_transactions (id, agent_id, kind, status, booking_state)"
                " VALUES ('x', 'a', 'k', 's', 'bogus')"
            )
    finally:
        await db.close()


async def columns(db: Database) -> set[str]:
    rows = await db.fetch_all("PRAGMA table_info(agent_transactions)")
    return {str(r["name"]) for r in rows}


async def test_neither_the_token_nor_the_secret_is_logged(
    amadeus_sandbox: AmadeusSandbox,
    proxy: ProxyFactory,
    nats_client: NATS,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with proxy(amadeus_sandbox, log_level="DEBUG") as app:
        await search(nats_client)
        await amadeus_sandbox.set_faults(expire_tokens=True)
        await search(nats_client)
        redis = app[redis_key]
        keys = [k async for k in redis.scan_iter(match="test:*:token")]
        token = (await redis.get(keys[0])).decode()
    output = capsys.readouterr()
    logged = output.out + output.err
    assert "amadeus token refreshed" in logged
    assert token not in logged
    assert amadeus_sandbox.client_secret not in logged
