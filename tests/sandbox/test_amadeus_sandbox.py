"""The Amadeus double behaves like the Self-Service API the amadeus-proxy will talk to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from sandbox.amadeus import AmadeusSandboxConfig
from sandbox.amadeus.offers import search_offers
from sandbox.amadeus.search import parse_search_query
from sandbox.amadeus.state import RateLimiter
from tests.fixtures.amadeus import AmadeusSandbox, sandbox_test_config, traveler

Factory = Callable[[AmadeusSandboxConfig], AbstractAsyncContextManager[AmadeusSandbox]]

TODAY = datetime.now(UTC).date()
DEPART = (TODAY + timedelta(days=30)).isoformat()
RETURN = (TODAY + timedelta(days=37)).isoformat()
SEARCH = "/v2/shopping/flight-offers"
PRICING = "/v1/shopping/flight-offers/pricing"
ORDERS = "/v1/booking/flight-orders"
ROUTE = {
    "originLocationCode": "CDG",
    "destinationLocationCode": "JFK",
    "departureDate": DEPART,
    "adults": "1",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    sandbox: AmadeusSandbox,
    method: str,
    path: str,
    token: str | None,
    *,
    params: dict[str, str] | None = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    all_headers = {**(bearer(token) if token else {}), **(headers or {})}
    async with sandbox.session.request(
        method, sandbox.url(path), params=params, json=json, headers=all_headers
    ) as resp:
        body = await resp.json() if resp.status != 204 else None
        return resp.status, body


async def search(sandbox: AmadeusSandbox, token: str, **params: str) -> tuple[int, Any]:
    return await call(sandbox, "GET", SEARCH, token, params={**ROUTE, **params})


def only_error(body: Any) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


# ---- unit: pure parts, no server ----


def test_offers_are_a_pure_function_of_the_query() -> None:
    query = parse_search_query({**ROUTE, "adults": "2"}, TODAY)
    first, again = search_offers(query, TODAY), search_offers(query, TODAY)
    assert first == again
    assert first["meta"]["count"] == len(first["data"]) > 0
    later = parse_search_query({**ROUTE, "departureDate": RETURN}, TODAY)
    assert search_offers(later, TODAY)["data"] != first["data"]


def test_rate_limiter_counts_per_client_with_a_moving_window() -> None:
    now = [100.0]
    limiter = RateLimiter(per_second=3, min_interval=0.1, clock=lambda: now[0])
    assert limiter.admit("a")
    assert not limiter.admit("a"), "second call inside 100 ms"
    assert limiter.admit("b"), "another client has its own budget"
    for _ in range(2):
        now[0] += 0.125  # binary fractions keep the clock arithmetic exact
        assert limiter.admit("a")
    now[0] += 0.125
    assert not limiter.admit("a"), "a fourth call within one second"
    now[0] += 0.75
    assert limiter.admit("a"), "the first call has left the window"
    assert RateLimiter(0, 0).admit("a")


def test_config_reads_environment_and_flags() -> None:
    env = {
        "AMADEUS_CLIENT_ID": "proxy-id",
        "AMADEUS_SANDBOX_CLIENT_SECRET": "sandbox-secret",
        "AMADEUS_SANDBOX_PORT": "9999",
        "AMADEUS_SANDBOX_TOKEN_TTL": "5",
    }
    config = AmadeusSandboxConfig.from_sources(["--port", "7000", "--rate-limit", "4"], env)
    assert (config.client_id, config.client_secret) == ("proxy-id", "sandbox-secret")
    assert (config.port, config.token_ttl_seconds, config.rate_limit_per_second) == (7000, 5, 4)
    assert config.min_interval_seconds == 0.1
    off = AmadeusSandboxConfig.from_sources(["--no-rate-limit"], {})
    assert (off.rate_limit_per_second, off.min_interval_seconds, off.port) == (0, 0.0, 8890)


# ---- token ----


@pytest.mark.connected
async def test_token_is_issued_for_the_configured_client(amadeus_sandbox: AmadeusSandbox) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": amadeus_sandbox.client_id,
        "client_secret": amadeus_sandbox.client_secret,
    }
    url = amadeus_sandbox.url("/v1/security/oauth2/token")
    async with amadeus_sandbox.session.post(url, data=form) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["type"] == "amadeusOAuth2Token"
    assert body["token_type"] == "Bearer"
    assert body["state"] == "approved"
    assert body["client_id"] == amadeus_sandbox.client_id
    assert body["expires_in"] == 1799
    assert len(body["access_token"]) >= 20
    status, _ = await search(amadeus_sandbox, body["access_token"])
    assert status == 200
    stats = await amadeus_sandbox.stats()
    assert (stats["token_requests"], stats["tokens_issued"]) == (1, 1)


@pytest.mark.connected
@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": None}, 400, "invalid_request"),
    ],
)
async def test_token_refused_for_bad_credentials_or_grant(
    amadeus_sandbox: AmadeusSandbox, form: dict[str, str | None], status: int, error: str
) -> None:
    good = {
        "grant_type": "client_credentials",
        "client_id": amadeus_sandbox.client_id,
        "client_secret": amadeus_sandbox.client_secret,
    }
    sent = {k: v for k, v in {**good, **form}.items() if v is not None}
    url = amadeus_sandbox.url("/v1/security/oauth2/token")
    async with amadeus_sandbox.session.post(url, data=sent) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"] == error
    assert body["code"] == 38187
    assert "access_token" not in body


# ---- bearer token ----


@pytest.mark.connected
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "wrong-scheme"],
)
async def test_api_refuses_calls_without_a_valid_token(
    amadeus_sandbox: AmadeusSandbox, headers: dict[str, str]
) -> None:
    async with amadeus_sandbox.session.get(
        amadeus_sandbox.url(SEARCH), params=ROUTE, headers=headers
    ) as resp:
        assert resp.status == 401
        body = await resp.json()
    error = only_error(body)
    assert (error["status"], error["code"], error["title"]) == (401, 38190, "Invalid access token")
    stats = await amadeus_sandbox.stats()
    assert (stats["search_requests"], stats["unauthorized_401"]) == (1, 1)


@pytest.mark.connected
async def test_token_expires_after_its_lifetime(amadeus_sandbox_factory: Factory) -> None:
    async with amadeus_sandbox_factory(sandbox_test_config(token_ttl_seconds=1)) as sandbox:
        token = await sandbox.get_token()
        assert (await search(sandbox, token))[0] == 200
        await asyncio.sleep(1.05)
        status, body = await search(sandbox, token)
        assert status == 401
        assert only_error(body)["code"] == 38190
        assert (await search(sandbox, await sandbox.get_token()))[0] == 200


# ---- rate limit ----


@pytest.mark.connected
async def test_min_interval_between_calls_gives_429(amadeus_sandbox_factory: Factory) -> None:
    config = sandbox_test_config(rate_limit_per_second=10, min_interval_seconds=0.1)
    async with amadeus_sandbox_factory(config) as sandbox:
        token = await sandbox.get_token()
        assert (await search(sandbox, token))[0] == 200
        status, body = await search(sandbox, token)
        assert status == 429
        error = only_error(body)
        assert (error["status"], error["code"], error["title"]) == (
            429,
            38194,
            "Too many requests",
        )
        await asyncio.sleep(0.12)
        assert (await search(sandbox, token))[0] == 200
        assert (await sandbox.stats())["rate_limited_429"] == 1


@pytest.mark.connected
async def test_transactions_per_second_limit_gives_429(amadeus_sandbox_factory: Factory) -> None:
    config = sandbox_test_config(rate_limit_per_second=3, min_interval_seconds=0)
    async with amadeus_sandbox_factory(config) as sandbox:
        token = await sandbox.get_token()
        statuses = [(await search(sandbox, token))[0] for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert (await sandbox.stats())["rate_limited_429"] == 2


@pytest.mark.connected
async def test_rate_limit_can_be_turned_off(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    statuses = await asyncio.gather(*(search(amadeus_sandbox, token) for _ in range(15)))
    assert [s for s, _ in statuses] == [200] * 15


# ---- search ----


@pytest.mark.connected
async def test_search_is_deterministic_and_shaped_like_amadeus(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    token = await amadeus_sandbox.get_token()
    status, first = await search(amadeus_sandbox, token, adults="2")
    _, again = await search(amadeus_sandbox, token, adults="2")
    assert status == 200
    assert first["data"] == again["data"]
    assert first["meta"]["count"] == len(first["data"]) > 0
    totals = [Decimal(o["price"]["grandTotal"]) for o in first["data"]]
    assert totals == sorted(totals), "cheapest first"
    assert [o["id"] for o in first["data"]] == [str(n) for n in range(1, len(totals) + 1)]
    dictionaries = first["dictionaries"]
    for offer in first["data"]:
        assert (offer["type"], offer["source"]) == ("flight-offer", "GDS")
        assert offer["numberOfBookableSeats"] >= 2
        assert offer["lastTicketingDate"] <= DEPART
        assert offer["validatingAirlineCodes"][0] in dictionaries["carriers"]
        price = offer["price"]
        assert isinstance(price["total"], str)
        assert price["total"] == price["grandTotal"]
        assert price["currency"] == "EUR"
        assert {f["type"] for f in price["fees"]} == {"SUPPLIER", "TICKETING"}
        pricings = offer["travelerPricings"]
        assert [tp["travelerType"] for tp in pricings] == ["ADULT", "ADULT"]
        assert sum(Decimal(tp["price"]["total"]) for tp in pricings) == Decimal(price["total"])
        (itinerary,) = offer["itineraries"]
        assert itinerary["duration"].startswith("PT")
        segments = itinerary["segments"]
        assert segments[0]["departure"]["iataCode"] == "CDG"
        assert segments[-1]["arrival"]["iataCode"] == "JFK"
        assert segments[0]["departure"]["at"].startswith(DEPART)
        for segment in segments:
            assert set(segment) >= {
                "departure",
                "arrival",
                "carrierCode",
                "number",
                "aircraft",
                "duration",
                "id",
                "numberOfStops",
            }
            assert segment["departure"]["at"] < segment["arrival"]["at"]
            assert segment["aircraft"]["code"] in dictionaries["aircraft"]
            assert segment["arrival"]["iataCode"] in dictionaries["locations"]
    assert dictionaries["locations"]["CDG"] == {"cityCode": "PAR", "countryCode": "FR"}
    assert dictionaries["currencies"] == {"EUR": "EURO"}
    _, other_day = await search(amadeus_sandbox, token, adults="2", departureDate=RETURN)
    assert other_day["data"] != first["data"]


@pytest.mark.connected
async def test_search_honours_filters(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    _, everything = await search(amadeus_sandbox, token)
    all_carriers = {o["validatingAirlineCodes"][0] for o in everything["data"]}
    keys = {(o["validatingAirlineCodes"][0], o["price"]["total"]) for o in everything["data"]}

    _, two = await search(amadeus_sandbox, token, max="2")
    assert two["meta"]["count"] == 2
    assert two["data"] == everything["data"][:2]

    _, direct = await search(amadeus_sandbox, token, nonStop="true")
    assert 0 < direct["meta"]["count"] < everything["meta"]["count"]
    assert all(len(it["segments"]) == 1 for o in direct["data"] for it in o["itineraries"])
    assert {(o["validatingAirlineCodes"][0], o["price"]["total"]) for o in direct["data"]} <= keys

    carrier = sorted(all_carriers)[0]
    _, included = await search(amadeus_sandbox, token, includedAirlineCodes=carrier)
    assert included["meta"]["count"] > 0
    assert {o["validatingAirlineCodes"][0] for o in included["data"]} == {carrier}
    _, excluded = await search(amadeus_sandbox, token, excludedAirlineCodes=carrier)
    assert carrier not in {o["validatingAirlineCodes"][0] for o in excluded["data"]}
    assert included["meta"]["count"] + excluded["meta"]["count"] == everything["meta"]["count"]
    _, nobody = await search(amadeus_sandbox, token, includedAirlineCodes="ZZ")
    assert (nobody["meta"]["count"], nobody["data"]) == (0, [])

    _, usd = await search(amadeus_sandbox, token, currencyCode="USD")
    assert {o["price"]["currency"] for o in usd["data"]} == {"USD"}
    assert Decimal(usd["data"][0]["price"]["total"]) > Decimal(
        everything["data"][0]["price"]["total"]
    )

    cheapest = Decimal(everything["data"][0]["price"]["total"])
    _, capped = await search(amadeus_sandbox, token, maxPrice=str(int(cheapest) + 1))
    assert capped["meta"]["count"] >= 1
    assert all(Decimal(o["price"]["total"]) <= cheapest + 1 for o in capped["data"])

    _, family = await search(amadeus_sandbox, token, adults="2", children="1", infants="1")
    pricings = family["data"][0]["travelerPricings"]
    assert [(tp["travelerId"], tp["travelerType"]) for tp in pricings] == [
        ("1", "ADULT"),
        ("2", "ADULT"),
        ("3", "CHILD"),
        ("4", "HELD_INFANT"),
    ]
    adult, child, infant = (Decimal(pricings[i]["price"]["total"]) for i in (0, 2, 3))
    assert adult > child > infant
    assert pricings[3]["associatedAdultId"] == "1"
    assert all(o["numberOfBookableSeats"] >= 3 for o in family["data"])

    _, business = await search(amadeus_sandbox, token, travelClass="BUSINESS", max="1")
    details = business["data"][0]["travelerPricings"][0]["fareDetailsBySegment"]
    assert {d["cabin"] for d in details} == {"BUSINESS"}

    _, round_trip = await search(amadeus_sandbox, token, returnDate=RETURN)
    legs = round_trip["data"][0]["itineraries"]
    assert len(legs) == 2
    assert legs[1]["segments"][0]["departure"]["iataCode"] == "JFK"
    assert legs[1]["segments"][0]["departure"]["at"].startswith(RETURN)


@pytest.mark.connected
@pytest.mark.parametrize(
    "override", [{"X-HTTP-Method-Override": "GET"}, {}], ids=["override-header", "plain-post"]
)
async def test_post_search_answers_like_get(
    amadeus_sandbox: AmadeusSandbox, override: dict[str, str]
) -> None:
    token = await amadeus_sandbox.get_token()
    body = {
        "currencyCode": "EUR",
        "originDestinations": [
            {
                "id": "1",
                "originLocationCode": "CDG",
                "destinationLocationCode": "JFK",
                "departureDateTimeRange": {"date": DEPART},
            }
        ],
        "travelers": [{"id": "1", "travelerType": "ADULT"}],
        "sources": ["GDS"],
        "searchCriteria": {"maxFlightOffers": 5},
    }
    status, posted = await call(amadeus_sandbox, "POST", SEARCH, token, json=body, headers=override)
    assert status == 200
    _, got = await search(amadeus_sandbox, token, max="5")
    assert posted["data"] == got["data"]
    assert posted["meta"]["count"] == 5


@pytest.mark.connected
@pytest.mark.parametrize(
    ("params", "code", "parameter"),
    [
        ({"originLocationCode": "PA"}, 477, "originLocationCode"),
        ({"destinationLocationCode": "jfk"}, 477, "destinationLocationCode"),
        ({"departureDate": "2030/01/01"}, 477, "departureDate"),
        ({"adults": "one"}, 477, "adults"),
        ({"travelClass": "COACH"}, 477, "travelClass"),
        ({"nonStop": "yes"}, 477, "nonStop"),
        ({"currencyCode": "euro"}, 477, "currencyCode"),
        ({"includedAirlineCodes": "AFR"}, 477, "includedAirlineCodes"),
        ({"max": "many"}, 477, "max"),
        ({"adults": None}, 32171, "adults"),
        ({"departureDate": (TODAY - timedelta(days=2)).isoformat()}, 425, "departureDate"),
        ({"departureDate": (TODAY + timedelta(days=400)).isoformat()}, 425, "departureDate"),
        ({"returnDate": (TODAY + timedelta(days=3)).isoformat()}, 425, "returnDate"),
        ({"adults": "10"}, 4926, "adults"),
        ({"adults": "1", "infants": "2"}, 4926, "infants"),
        ({"adults": "5", "children": "5"}, 4926, "children"),
        (
            {"includedAirlineCodes": "AF", "excludedAirlineCodes": "LH"},
            4926,
            "excludedAirlineCodes",
        ),
        ({"destinationLocationCode": "CDG"}, 4926, "destinationLocationCode"),
    ],
)
async def test_search_validation_errors_name_the_parameter(
    amadeus_sandbox: AmadeusSandbox, params: dict[str, str | None], code: int, parameter: str
) -> None:
    token = await amadeus_sandbox.get_token()
    query = {k: v for k, v in {**ROUTE, **params}.items() if v is not None}
    status, body = await call(amadeus_sandbox, "GET", SEARCH, token, params=query)
    assert status == 400
    error = only_error(body)
    assert (error["status"], error["code"], error["source"]["parameter"]) == (400, code, parameter)
    assert error["title"]
    assert error["detail"]


@pytest.mark.connected
async def test_post_search_validation_errors_point_into_the_body(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    token = await amadeus_sandbox.get_token()
    body = {
        "originDestinations": [
            {"id": "1", "originLocationCode": "Paris", "destinationLocationCode": "JFK"}
        ],
        "travelers": [{"id": "1", "travelerType": "HELD_INFANT"}],
    }
    status, answer = await call(amadeus_sandbox, "POST", SEARCH, token, json=body)
    assert status == 400
    found = {(e["code"], e["source"]["pointer"]) for e in answer["errors"]}
    assert found == {
        (477, "/originDestinations[0]/originLocationCode"),
        (32171, "/originDestinations[0]/departureDateTimeRange/date"),
        (4926, "/travelers[0]/associatedAdultId"),
        (32171, "/sources"),
    }
    async with amadeus_sandbox.session.post(
        amadeus_sandbox.url(SEARCH), data=b"{not json", headers=bearer(token)
    ) as resp:
        assert resp.status == 400
        assert only_error(await resp.json())["code"] == 477


# ---- price and book ----


async def first_offers(sandbox: AmadeusSandbox, token: str, **params: str) -> list[dict[str, Any]]:
    status, body = await search(sandbox, token, max="1", **params)
    assert status == 200
    offers: list[dict[str, Any]] = body["data"]
    return offers


@pytest.mark.connected
async def test_pricing_confirms_the_offers_given(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token, adults="2")
    request = {"data": {"type": "flight-offers-pricing", "flightOffers": offers}}
    status, body = await call(amadeus_sandbox, "POST", PRICING, token, json=request)
    assert status == 200
    assert body["data"]["type"] == "flight-offers-pricing"
    (priced,) = body["data"]["flightOffers"]
    assert priced["id"] == offers[0]["id"]
    assert priced["price"]["grandTotal"] == offers[0]["price"]["grandTotal"]
    assert priced["itineraries"] == offers[0]["itineraries"]
    assert "CDG" in body["dictionaries"]["locations"]

    tampered = {**offers[0], "price": {**offers[0]["price"], "grandTotal": "1.00"}}
    request = {"data": {"type": "flight-offers-pricing", "flightOffers": [tampered]}}
    status, body = await call(amadeus_sandbox, "POST", PRICING, token, json=request)
    assert status == 400
    assert only_error(body)["source"]["pointer"] == "/data/flightOffers[0]/price/grandTotal"

    status, body = await call(
        amadeus_sandbox, "POST", PRICING, token, json={"data": {"type": "flight-offers-pricing"}}
    )
    assert status == 400
    assert only_error(body)["code"] == 32171
    assert (await amadeus_sandbox.stats())["pricing_requests"] == 3


@pytest.mark.connected
async def test_booking_creates_an_order(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token, adults="2")
    travelers = [traveler("1"), traveler("2")]
    request = {"data": {"type": "flight-order", "flightOffers": offers, "travelers": travelers}}
    async with amadeus_sandbox.session.post(
        amadeus_sandbox.url(ORDERS), json=request, headers=bearer(token)
    ) as resp:
        assert resp.status == 201
        assert resp.content_type == "application/vnd.amadeus+json"
        order = (await resp.json())["data"]
        location = resp.headers["Location"]
    assert order["type"] == "flight-order"
    assert order["id"]
    (record,) = order["associatedRecords"]
    assert len(record["reference"]) == 6
    assert record["originSystemCode"] == "GDS"
    assert record["flightOfferId"] == offers[0]["id"]
    datetime.fromisoformat(record["creationDateTime"])
    assert order["flightOffers"] == offers
    assert order["travelers"] == travelers

    status, second = await call(amadeus_sandbox, "POST", ORDERS, token, json=request)
    assert status == 201
    assert second["data"]["id"] != order["id"]
    assert second["data"]["associatedRecords"][0]["reference"] != record["reference"]

    async with amadeus_sandbox.session.get(location, headers=bearer(token)) as resp:
        assert resp.status == 200
        assert (await resp.json())["data"]["id"] == order["id"]
    status, _ = await call(amadeus_sandbox, "DELETE", f"{ORDERS}/{order['id']}", token)
    assert status == 204
    status, body = await call(amadeus_sandbox, "GET", f"{ORDERS}/{order['id']}", token)
    assert (status, only_error(body)["code"]) == (404, 1797)
    stats = await amadeus_sandbox.stats()
    assert (stats["order_requests"], stats["orders_created"]) == (5, 2)


@pytest.mark.connected
async def test_booking_validates_travelers(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token, adults="2")
    one_missing = {
        "data": {"type": "flight-order", "flightOffers": offers, "travelers": [traveler("1")]}
    }
    status, body = await call(amadeus_sandbox, "POST", ORDERS, token, json=one_missing)
    assert status == 400
    assert only_error(body)["code"] == 4926
    nameless = {**traveler("1"), "name": {"firstName": "AMINA"}}
    bad = {
        "data": {
            "type": "flight-order",
            "flightOffers": offers,
            "travelers": [nameless, {**traveler("2"), "dateOfBirth": "12/04/1990"}],
        }
    }
    status, body = await call(amadeus_sandbox, "POST", ORDERS, token, json=bad)
    assert status == 400
    assert {(e["code"], e["source"]["pointer"]) for e in body["errors"]} == {
        (32171, "/data/travelers[0]/name/lastName"),
        (477, "/data/travelers[1]/dateOfBirth"),
    }
    assert (await amadeus_sandbox.stats())["orders_created"] == 0


# ---- fault switches and counters ----


@pytest.mark.connected
async def test_fail_next_on_one_path_gives_500_then_recovers(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    token = await amadeus_sandbox.get_token()
    faults = await amadeus_sandbox.set_faults(fail_next={"count": 2, "path": SEARCH})
    assert faults["fail_next"] == {SEARCH: 2}
    for _ in range(2):
        status, body = await search(amadeus_sandbox, token)
        error = only_error(body)
        assert (status, error["code"], error["title"]) == (500, 141, "SYSTEM ERROR HAS OCCURRED")
    assert (await search(amadeus_sandbox, token))[0] == 200
    assert (await amadeus_sandbox.faults())["fail_next"] == {}
    assert (await amadeus_sandbox.stats())["server_errors_500"] == 2


@pytest.mark.connected
async def test_fail_next_without_path_hits_every_call(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token)
    await amadeus_sandbox.set_faults(fail_next={"count": 2})
    pricing = {"data": {"type": "flight-offers-pricing", "flightOffers": offers}}
    assert (await call(amadeus_sandbox, "POST", PRICING, token, json=pricing))[0] == 500
    url = amadeus_sandbox.url("/v1/security/oauth2/token")
    async with amadeus_sandbox.session.post(url, data={"grant_type": "x"}) as resp:
        assert resp.status == 500
    assert (await call(amadeus_sandbox, "POST", PRICING, token, json=pricing))[0] == 200


@pytest.mark.connected
async def test_latency_fault_slows_calls(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    await amadeus_sandbox.set_faults(latency_seconds=0.3)
    started = time.monotonic()
    assert (await search(amadeus_sandbox, token))[0] == 200
    assert time.monotonic() - started >= 0.3
    await amadeus_sandbox.set_faults(latency_seconds=0)
    started = time.monotonic()
    assert (await search(amadeus_sandbox, token))[0] == 200
    assert time.monotonic() - started < 0.3


@pytest.mark.connected
async def test_expire_tokens_fault_invalidates_every_token(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    tokens = [await amadeus_sandbox.get_token() for _ in range(2)]
    assert (await amadeus_sandbox.faults())["active_tokens"] == 2
    faults = await amadeus_sandbox.set_faults(expire_tokens=True)
    assert faults["active_tokens"] == 0
    for token in tokens:
        status, body = await search(amadeus_sandbox, token)
        assert (status, only_error(body)["code"]) == (401, 38190)
    assert (await search(amadeus_sandbox, await amadeus_sandbox.get_token()))[0] == 200


@pytest.mark.connected
async def test_force_429_for_n_calls(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    await amadeus_sandbox.set_faults(force_429=2)
    statuses = [(await search(amadeus_sandbox, token))[0] for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert (await amadeus_sandbox.stats())["rate_limited_429"] == 2


@pytest.mark.connected
async def test_pricing_price_discrepancy_fault(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token)
    request = {"data": {"type": "flight-offers-pricing", "flightOffers": offers}}
    await amadeus_sandbox.set_faults(pricing_price_discrepancy=True)
    status, body = await call(amadeus_sandbox, "POST", PRICING, token, json=request)
    error = only_error(body)
    assert (status, error["code"], error["title"]) == (400, 37200, "PRICE DISCREPANCY")
    assert offers[0]["price"]["grandTotal"] in error["detail"]
    await amadeus_sandbox.set_faults(pricing_price_discrepancy=False)
    assert (await call(amadeus_sandbox, "POST", PRICING, token, json=request))[0] == 200


@pytest.mark.connected
@pytest.mark.parametrize("code", [34651, 36870, 37200])
async def test_booking_failure_fault(amadeus_sandbox: AmadeusSandbox, code: int) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token)
    request = {
        "data": {"type": "flight-order", "flightOffers": offers, "travelers": [traveler("1")]}
    }
    await amadeus_sandbox.set_faults(booking_failure_code=code)
    status, body = await call(amadeus_sandbox, "POST", ORDERS, token, json=request)
    assert (status, only_error(body)["code"]) == (400, code)
    assert (await amadeus_sandbox.faults())["booking_failure_code"] == code
    await amadeus_sandbox.set_faults(booking_failure_code=None)
    assert (await call(amadeus_sandbox, "POST", ORDERS, token, json=request))[0] == 201
    assert (await amadeus_sandbox.stats())["orders_created"] == 1


@pytest.mark.connected
async def test_stats_count_every_kind_and_reset_clears_them(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    token = await amadeus_sandbox.get_token()
    offers = await first_offers(amadeus_sandbox, token)
    await call(amadeus_sandbox, "POST", SEARCH, "bad-token", json={})
    pricing = {"data": {"type": "flight-offers-pricing", "flightOffers": offers}}
    await call(amadeus_sandbox, "POST", PRICING, token, json=pricing)
    await call(amadeus_sandbox, "POST", ORDERS, token, json={"data": {}})
    await amadeus_sandbox.set_faults(force_429=1, latency_seconds=0.01, booking_failure_code=34651)
    await search(amadeus_sandbox, token)
    assert await amadeus_sandbox.stats() == {
        "token_requests": 1,
        "tokens_issued": 1,
        "search_requests": 3,
        "pricing_requests": 1,
        "order_requests": 1,
        "orders_created": 0,
        "unauthorized_401": 1,
        "rate_limited_429": 1,
        "server_errors_500": 0,
        "bad_requests_400": 1,
    }
    after = await amadeus_sandbox.reset()
    assert after["latency_seconds"] == 0
    assert after["booking_failure_code"] is None
    assert after["active_tokens"] == 1, "tokens survive a reset"
    assert set((await amadeus_sandbox.stats()).values()) == {0}
    assert (await search(amadeus_sandbox, token))[0] == 200


@pytest.mark.connected
async def test_admin_rejects_unknown_or_invalid_faults(amadeus_sandbox: AmadeusSandbox) -> None:
    for bad in ({"explode": True}, {"booking_failure_code": 1}, {"latency_seconds": -1}):
        async with amadeus_sandbox.session.post(
            amadeus_sandbox.url("/admin/faults"), json=bad
        ) as resp:
            assert resp.status == 400, bad
    assert (await amadeus_sandbox.faults())["booking_failure_code"] is None


@pytest.mark.connected
async def test_unknown_path_is_amadeus_404(amadeus_sandbox: AmadeusSandbox) -> None:
    token = await amadeus_sandbox.get_token()
    status, body = await call(amadeus_sandbox, "GET", "/v1/nothing-here", token)
    assert (status, only_error(body)["code"]) == (404, 38196)


# ---- media types ----


@pytest.mark.connected
async def test_answers_carry_the_real_media_types_with_no_parameter(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    """Exactly what the real API sends (the official SDKs compare the whole header); the
    `charset_parameter` switch adds "; charset=utf-8" for clients that must accept both."""
    token_url = amadeus_sandbox.url("/v1/security/oauth2/token")
    good = {
        "grant_type": "client_credentials",
        "client_id": amadeus_sandbox.client_id,
        "client_secret": amadeus_sandbox.client_secret,
    }

    async def content_types() -> list[str]:
        found = []
        for form in (good, {**good, "client_secret": "wrong"}):
            async with amadeus_sandbox.session.post(token_url, data=form) as resp:
                found.append(resp.headers["Content-Type"])
        token = await amadeus_sandbox.get_token()
        for params, headers in ((ROUTE, bearer(token)), ({}, bearer(token)), (ROUTE, {})):
            async with amadeus_sandbox.session.get(
                amadeus_sandbox.url(SEARCH), params=params, headers=headers
            ) as resp:
                found.append(resp.headers["Content-Type"])
        return found

    oauth, api = "application/json", "application/vnd.amadeus+json"
    assert await content_types() == [oauth, oauth, api, api, api]
    faults = await amadeus_sandbox.set_faults(charset_parameter=True)
    assert faults["charset_parameter"] is True
    charset = "; charset=utf-8"
    assert await content_types() == [oauth + charset] * 2 + [api + charset] * 3
    assert (await amadeus_sandbox.reset())["charset_parameter"] is False
    assert await content_types() == [oauth, oauth, api, api, api]
