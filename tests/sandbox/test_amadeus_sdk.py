"""The official Amadeus Python SDK (`amadeus` 12.0.0, unmodified) as a client of the double.

The double is only worth its likeness to the real API; the SDK was written against the real
one, so whatever it accepts here it would accept there. It is synchronous (urllib): each call
runs in a thread while the double serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import amadeus
import pytest
from yarl import URL

from sandbox.amadeus import AmadeusSandboxConfig
from sandbox.amadeus.app import state_key
from sandbox.amadeus.offers import search_offers
from sandbox.amadeus.search import parse_search_query
from tests.fixtures.amadeus import AmadeusSandbox, sandbox_test_config, traveler

pytestmark = pytest.mark.connected

Factory = Callable[[AmadeusSandboxConfig], AbstractAsyncContextManager[AmadeusSandbox]]

API_JSON = "application/vnd.amadeus+json"
SEARCH = "/v2/shopping/flight-offers"


def depart(sandbox: AmadeusSandbox) -> str:
    return (sandbox.app[state_key].today() + timedelta(days=30)).isoformat()


def route(sandbox: AmadeusSandbox, **params: str) -> dict[str, str]:
    return {
        "originLocationCode": "CDG",
        "destinationLocationCode": "JFK",
        "departureDate": depart(sandbox),
        "adults": "1",
        **params,
    }


def sdk_client(sandbox: AmadeusSandbox, *, client_secret: str | None = None) -> Any:
    """An SDK client pointed at the double. Every option is given, so no AMADEUS_* variable of
    the developer's environment (which the SDK reads for a missing one) changes the test."""
    url = URL(sandbox.base_url)
    return amadeus.Client(
        client_id=sandbox.client_id,
        client_secret=client_secret or sandbox.client_secret,
        host=url.host,
        port=url.port,
        ssl=False,
        log_level="silent",
    )


@pytest.fixture(autouse=True)
def sdk_logger_restored() -> Iterator[None]:
    """Each amadeus.Client adds a stdout handler to the `amadeus` logger (its own default
    logger, left as it is); they are dropped after the test so that they do not pile up."""
    logger = logging.getLogger("amadeus")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture
def sdk(amadeus_sandbox: AmadeusSandbox) -> Any:
    return sdk_client(amadeus_sandbox)


async def sdk_error(error_class: Any, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one SDK call that must fail; return the SDK's ResponseError."""
    with pytest.raises(error_class) as caught:
        await asyncio.to_thread(call, *args, **kwargs)
    error = caught.value
    assert isinstance(error, amadeus.ResponseError)
    assert error.code == error_class.__name__
    return error


def amadeus_error(error: Any) -> dict[str, Any]:
    """The single Amadeus error item the SDK parsed from the answer."""
    assert error.response.parsed, "the SDK could not parse the error body"
    (item,) = error.response.result["errors"]
    assert isinstance(item, dict)
    return item


def assert_offer_shape(offer: dict[str, Any]) -> None:
    assert offer["type"] == "flight-offer"
    assert offer["id"]
    assert offer["source"] == "GDS"
    assert offer["itineraries"]
    assert all(itinerary["duration"].startswith("PT") for itinerary in offer["itineraries"])
    assert all(itinerary["segments"] for itinerary in offer["itineraries"])
    price = offer["price"]
    assert all(isinstance(price[k], str) for k in ("currency", "total", "base", "grandTotal"))
    assert offer["validatingAirlineCodes"]
    assert offer["travelerPricings"]
    assert isinstance(offer["numberOfBookableSeats"], int)


async def first_offer(sdk: Any, sandbox: AmadeusSandbox) -> dict[str, Any]:
    response = await asyncio.to_thread(
        sdk.shopping.flight_offers_search.get, **route(sandbox, max="1")
    )
    offer: dict[str, Any] = response.data[0]
    return offer


# ---- token ----


async def test_the_sdk_takes_one_token_and_reuses_it(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    for _ in range(3):
        response = await asyncio.to_thread(
            sdk.shopping.flight_offers_search.get, **route(amadeus_sandbox)
        )
        assert response.status_code == 200
    stats = await amadeus_sandbox.stats()
    assert (stats["token_requests"], stats["tokens_issued"], stats["search_requests"]) == (1, 1, 3)


async def test_bad_credentials_are_the_sdks_authentication_error(
    amadeus_sandbox: AmadeusSandbox,
) -> None:
    sdk = sdk_client(amadeus_sandbox, client_secret="wrong")
    error = await sdk_error(
        amadeus.AuthenticationError,
        sdk.shopping.flight_offers_search.get,
        **route(amadeus_sandbox),
    )
    assert error.response.status_code == 401
    assert error.response.headers["Content-Type"] == "application/json"
    result = error.response.result
    assert (result["error"], result["code"], result["title"]) == (
        "invalid_client",
        38187,
        "Invalid parameters",
    )
    assert "Client credentials are invalid" in str(error)
    assert (await amadeus_sandbox.stats())["search_requests"] == 0


async def test_a_charset_parameter_is_what_the_sdk_cannot_parse(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    """Why the double sends bare media types: the SDK compares the whole Content-Type."""
    await amadeus_sandbox.set_faults(charset_parameter=True)
    error = await sdk_error(
        amadeus.ParserError, sdk.shopping.flight_offers_search.get, **route(amadeus_sandbox)
    )
    assert error.response.status_code == 200
    assert error.response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert str(error) == "[200]"


# ---- search ----


async def test_get_search_hands_back_the_doubles_offers(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    query = route(amadeus_sandbox, adults="2", max="5")
    response = await asyncio.to_thread(sdk.shopping.flight_offers_search.get, **query)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == API_JSON
    assert response.parsed
    today = amadeus_sandbox.app[state_key].today()
    expected = search_offers(parse_search_query(query, today), today)
    assert response.data == expected["data"]
    assert len(response.data) == response.result["meta"]["count"] == 5
    assert set(response.result["dictionaries"]) == {
        "locations",
        "aircraft",
        "currencies",
        "carriers",
    }
    for offer in response.data:
        assert_offer_shape(offer)
        assert len(offer["travelerPricings"]) == 2


async def test_post_search_answers_like_get(sdk: Any, amadeus_sandbox: AmadeusSandbox) -> None:
    body = {
        "currencyCode": "EUR",
        "originDestinations": [
            {
                "id": "1",
                "originLocationCode": "CDG",
                "destinationLocationCode": "JFK",
                "departureDateTimeRange": {"date": depart(amadeus_sandbox)},
            }
        ],
        "travelers": [{"id": "1", "travelerType": "ADULT"}],
        "sources": ["GDS"],
        "searchCriteria": {"maxFlightOffers": 5},
    }
    posted = await asyncio.to_thread(sdk.shopping.flight_offers_search.post, body)
    assert posted.status_code == 200
    assert posted.request.headers["X-HTTP-Method-Override"] == "GET"
    got = await asyncio.to_thread(
        sdk.shopping.flight_offers_search.get, **route(amadeus_sandbox, max="5")
    )
    assert posted.data == got.data
    assert posted.result["meta"]["count"] == 5


async def test_bad_search_is_the_sdks_client_error_with_amadeus_code(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    error = await sdk_error(
        amadeus.ClientError,
        sdk.shopping.flight_offers_search.get,
        **route(amadeus_sandbox, originLocationCode="PARIS"),
    )
    assert error.response.status_code == 400
    assert error.response.headers["Content-Type"] == API_JSON
    item = amadeus_error(error)
    assert (item["status"], item["code"], item["title"]) == (400, 477, "INVALID FORMAT")
    assert item["source"]["parameter"] == "originLocationCode"
    # The SDK writes each parameter error into its message: "[originLocationCode] <detail>".
    assert f"[originLocationCode] {item['detail']}" in str(error)
    assert str(error).startswith("[400]")


# ---- price, book, retrieve, delete ----


async def test_price_book_retrieve_and_delete_an_order(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    offer = await first_offer(sdk, amadeus_sandbox)

    priced = await asyncio.to_thread(sdk.shopping.flight_offers.pricing.post, offer)
    assert priced.status_code == 200
    assert priced.headers["Content-Type"] == API_JSON
    assert priced.data["type"] == "flight-offers-pricing"
    (priced_offer,) = priced.data["flightOffers"]
    assert_offer_shape(priced_offer)
    assert priced_offer["price"]["grandTotal"] == offer["price"]["grandTotal"]

    booked = await asyncio.to_thread(sdk.booking.flight_orders.post, priced_offer, [traveler("1")])
    assert booked.status_code == 201
    assert booked.headers["Content-Type"] == API_JSON
    order = booked.data
    assert order["type"] == "flight-order"
    (record,) = order["associatedRecords"]
    assert len(record["reference"]) == 6
    assert record["originSystemCode"] == "GDS"
    assert record["flightOfferId"] == offer["id"]
    assert record["creationDateTime"]
    assert order["travelers"] == [traveler("1")]

    fetched = await asyncio.to_thread(sdk.booking.flight_order(order["id"]).get)
    assert fetched.status_code == 200
    assert fetched.data == order

    deleted = await asyncio.to_thread(sdk.booking.flight_order(order["id"]).delete)
    assert deleted.status_code == 204
    assert deleted.result is None
    assert deleted.data is None

    error = await sdk_error(amadeus.NotFoundError, sdk.booking.flight_order(order["id"]).get)
    assert error.response.status_code == 404
    assert amadeus_error(error)["code"] == 1797
    stats = await amadeus_sandbox.stats()
    assert (stats["pricing_requests"], stats["order_requests"], stats["orders_created"]) == (
        1,
        4,
        1,
    )


async def test_booking_failure_is_the_sdks_client_error(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    offer = await first_offer(sdk, amadeus_sandbox)
    await amadeus_sandbox.set_faults(booking_failure_code=34651)
    error = await sdk_error(
        amadeus.ClientError, sdk.booking.flight_orders.post, offer, traveler("1")
    )
    assert error.response.status_code == 400
    item = amadeus_error(error)
    assert (item["code"], item["title"]) == (34651, "SEGMENT SELL FAILURE")


# ---- expired token, server error, rate limit ----


async def test_expired_token_is_the_sdks_authentication_error_and_not_retried(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    search = sdk.shopping.flight_offers_search.get
    assert (await asyncio.to_thread(search, **route(amadeus_sandbox))).status_code == 200
    await amadeus_sandbox.set_faults(expire_tokens=True)
    for _ in range(2):
        # The SDK keeps its token until its own clock says it expired: every call fails.
        error = await sdk_error(amadeus.AuthenticationError, search, **route(amadeus_sandbox))
        assert error.response.status_code == 401
        item = amadeus_error(error)
        assert (item["status"], item["code"], item["title"]) == (
            401,
            38190,
            "Invalid access token",
        )
    stats = await amadeus_sandbox.stats()
    assert (stats["token_requests"], stats["unauthorized_401"]) == (1, 2)
    fresh = sdk_client(amadeus_sandbox).shopping.flight_offers_search.get
    assert (await asyncio.to_thread(fresh, **route(amadeus_sandbox))).status_code == 200


async def test_amadeus_500_is_the_sdks_server_error(
    sdk: Any, amadeus_sandbox: AmadeusSandbox
) -> None:
    await amadeus_sandbox.set_faults(fail_next={"count": 1, "path": SEARCH})
    search = sdk.shopping.flight_offers_search.get
    error = await sdk_error(amadeus.ServerError, search, **route(amadeus_sandbox))
    assert error.response.status_code == 500
    assert amadeus_error(error)["code"] == 141
    assert (await asyncio.to_thread(search, **route(amadeus_sandbox))).status_code == 200


async def test_rate_limit_is_the_sdks_client_error_429(amadeus_sandbox_factory: Factory) -> None:
    # 60 s between two calls of a client, so the second is refused however slow the machine.
    config = sandbox_test_config(rate_limit_per_second=10, min_interval_seconds=60.0)
    async with amadeus_sandbox_factory(config) as sandbox:
        search = sdk_client(sandbox).shopping.flight_offers_search.get
        assert (await asyncio.to_thread(search, **route(sandbox))).status_code == 200
        error = await sdk_error(amadeus.ClientError, search, **route(sandbox))
        assert error.response.status_code == 429
        item = amadeus_error(error)
        assert (item["status"], item["code"], item["title"]) == (429, 38194, "Too many requests")
        stats = await sandbox.stats()
        # The SDK has no 429 back-off: one refused call, not retried.
        assert (stats["search_requests"], stats["rate_limited_429"]) == (2, 1)
