"""Amadeus routes: flight offers search and idempotent flight booking, through the amadeus-proxy.

Bodies use Amadeus's field names and are checked with Amadeus's own rules (the shared schema's)
here, so that a request Amadeus would refuse is a 422 naming the field before anything leaves
the gateway. The proxy answers over NATS request/reply; its errors (409, 422, 429, ...) come
back as the same `ApiError`, with their headers (`Retry-After`), and are answered as they are.
Both routes sit under `/api/proxy/`, so the rate limiter counts them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from axiom_gateway.client_identity import authenticated_user_key, parse_address, peer_of
from axiom_gateway.openapi import Operation, header_param
from axiom_gateway.payments_routes import idempotency_key
from axiom_gateway.settings import GatewaySettings
from axiom_shared.errors import ApiError, ErrorBody, ErrorDetail
from axiom_shared.http import json_response, read_json
from axiom_shared.nats import request
from axiom_shared.schemas.amadeus import (
    FlightBookInput,
    FlightBookResult,
    FlightOffer,
    FlightSearchInput,
    FlightSearchResult,
    Traveler,
)
from axiom_shared.schemas.base import StrictModel
from axiom_shared.service import bus_key, settings_key
from axiom_shared.topology import AMADEUS_BOOK, AMADEUS_SEARCH

SEARCH_PATH = "/api/proxy/amadeus/search"
BOOK_PATH = "/api/proxy/amadeus/book"
REPLAYED_HEADER = "Idempotent-Replayed"
#: Six priced offers and eighteen travelers fit well inside this.
MAX_BOOKING_BODY = 512 * 1024


class FlightSearchBody(FlightSearchInput):
    """`POST /api/proxy/amadeus/search`: the search message without its `schema` tag, which is
    ours to set (a `schema` in the body is an unknown field). The rules are the message's."""

    schema_: SkipJsonSchema[str] = Field(
        default="", validation_alias="schema_", serialization_alias="schema", validate_default=True
    )


class FlightBookBody(StrictModel):
    """`POST /api/proxy/amadeus/book`: offers from a search and who flies. The key comes from
    the `Idempotency-Key` header and the caller from the auth layer, never from the body."""

    flightOffers: list[FlightOffer] = Field(min_length=1, max_length=6)
    travelers: list[Traveler] = Field(min_length=1, max_length=18)


class FlightOffersAnswer(BaseModel):
    """Amadeus's flight offers answer, passed on as Amadeus sent it."""

    model_config = ConfigDict(extra="allow")

    meta: dict[str, Any] = {}
    data: list[dict[str, Any]]
    dictionaries: dict[str, Any] | None = None


class FlightOrderAnswer(BaseModel):
    """Amadeus's flight order (`data.id` is the order id), passed on as Amadeus sent it."""

    model_config = ConfigDict(extra="allow")

    data: dict[str, Any]
    dictionaries: dict[str, Any] | None = None


def _settings(req: web.Request) -> GatewaySettings:
    settings = req.app[settings_key]
    assert isinstance(settings, GatewaySettings)
    return settings


def caller_id(req: web.Request, settings: GatewaySettings) -> str | None:
    """The authenticated caller: set in process by an auth layer, or named in the user-id
    header by one of our trusted proxies (from anyone else that header means nothing)."""
    user: str | None = req.get(authenticated_user_key)
    if user:
        return user
    peer_text = peer_of(req)
    peer = parse_address(peer_text) if peer_text else None
    if peer is None or not any(peer in network for network in settings.trusted_proxies):
        return None
    return req.headers.get(settings.user_id_header, "").strip() or None


async def search_flights(req: web.Request) -> web.Response:
    query = await read_json(req, FlightSearchBody)
    result = await request(
        req.app[bus_key].nc,
        AMADEUS_SEARCH,
        query,
        FlightSearchResult,
        timeout=_settings(req).amadeus_request_timeout,
    )
    return json_response(result.amadeus_response)


async def book_flight(req: web.Request) -> web.Response:
    settings = _settings(req)
    key = idempotency_key(req)
    if key is None:
        raise ApiError(
            400,
            "idempotency_key_required",
            "a booking needs an Idempotency-Key header, so that a retry never books twice",
            [ErrorDetail(field="Idempotency-Key", problem="required")],
        )
    body = await read_json(req, FlightBookBody, max_bytes=MAX_BOOKING_BODY)
    # The message's own rules (unique traveler ids, ...) apply here: a ValidationError is a 422.
    booking = FlightBookInput(
        idempotency_key=key,
        user_id=caller_id(req, settings),
        flightOffers=body.flightOffers,
        travelers=body.travelers,
    )
    result = await request(
        req.app[bus_key].nc,
        AMADEUS_BOOK,
        booking,
        FlightBookResult,
        timeout=settings.amadeus_request_timeout,
    )
    headers = {REPLAYED_HEADER: "true"} if result.replayed else None
    return json_response(result.amadeus_response, status=201, headers=headers)


def add_amadeus_routes(app: web.Application) -> list[Operation]:
    app.router.add_post(SEARCH_PATH, search_flights)
    app.router.add_post(BOOK_PATH, book_flight)
    errors: dict[int, type[BaseModel] | None] = {
        status: ErrorBody for status in (400, 413, 415, 422, 429, 502, 503, 504)
    }
    order_ref = {"$ref": f"#/components/schemas/{FlightOrderAnswer.__name__}"}
    return [
        Operation(
            "post",
            SEARCH_PATH,
            "Flight offers search (Amadeus's parameters and rules; Amadeus's answer)",
            {200: FlightOffersAnswer, **errors},
            body=FlightSearchBody,
            tags=("amadeus",),
        ),
        Operation(
            "post",
            BOOK_PATH,
            "Book a flight order, at most once per Idempotency-Key",
            {201: FlightOrderAnswer, 409: ErrorBody, **errors},
            body=FlightBookBody,
            parameters=[
                header_param(
                    "Idempotency-Key",
                    "required: the same key and body get the first answer again (marked "
                    "Idempotent-Replayed); the same key with another body is a 422; while the "
                    "first is still running, a 409",
                    required=True,
                )
            ],
            tags=("amadeus",),
            response_docs={
                201: {
                    "description": "the flight order, as Amadeus answered it",
                    "headers": {
                        REPLAYED_HEADER: {
                            "description": "`true` when this is the stored first answer",
                            "schema": {"type": "string", "enum": ["true"]},
                        }
                    },
                    "content": {"application/json": {"schema": order_ref}},
                }
            },
        ),
    ]
