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

from axiom_gateway.client_identity import IdentityRules, authenticated_user
from axiom_gateway.payments_routes import idempotency_key
from axiom_gateway.settings import settings_key
from axiom_shared.errors import ApiError, ErrorBody, ErrorDetail
from axiom_shared.http import json_response, read_json
from axiom_shared.nats import request
from axiom_shared.openapi import BODY_ERRORS, errors, header_param
from axiom_shared.routes import Route
from axiom_shared.schemas.amadeus import (
    FlightBookInput,
    FlightBookResult,
    FlightOffer,
    FlightSearchInput,
    FlightSearchResult,
    Traveler,
)
from axiom_shared.schemas.base import StrictModel
from axiom_shared.service import bus_key
from axiom_shared.topology import AMADEUS_BOOK, AMADEUS_SEARCH
from axiom_shared.wire import IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER

SEARCH_PATH = "/api/proxy/amadeus/search"
BOOK_PATH = "/api/proxy/amadeus/book"
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


async def search_flights(req: web.Request) -> web.Response:
    query = await read_json(req, FlightSearchBody)
    result = await request(
        req.app[bus_key].nc,
        AMADEUS_SEARCH,
        query,
        FlightSearchResult,
        timeout=req.app[settings_key].amadeus_request_timeout,
    )
    return json_response(result.amadeus_response)


async def book_flight(req: web.Request) -> web.Response:
    settings = req.app[settings_key]
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
        # The authenticated caller (our auth layer, or a trusted proxy's user-id header).
        user_id=authenticated_user(req, IdentityRules.from_settings(settings)),
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
    headers = {IDEMPOTENT_REPLAYED_HEADER: "true"} if result.replayed else None
    return json_response(result.amadeus_response, status=201, headers=headers)


_ERRORS = errors(*BODY_ERRORS, 429, 502, 503, 504)

ROUTES = (
    Route(
        "POST",
        SEARCH_PATH,
        search_flights,
        "Flight offers search (Amadeus's parameters and rules; Amadeus's answer)",
        body=FlightSearchBody,
        responses={200: FlightOffersAnswer, **_ERRORS},
        tags=("amadeus",),
        feature="amadeus",
    ),
    Route(
        "POST",
        BOOK_PATH,
        book_flight,
        "Book a flight order, at most once per Idempotency-Key",
        body=FlightBookBody,
        responses={201: FlightOrderAnswer, 409: ErrorBody, **_ERRORS},
        parameters=[
            header_param(
                IDEMPOTENCY_KEY_HEADER,
                "required: the same key and body get the first answer again (marked "
                f"{IDEMPOTENT_REPLAYED_HEADER}); the same key with another body is a 422; "
                "while the first is still running, a 409",
                required=True,
            )
        ],
        tags=("amadeus",),
        response_docs={
            201: {
                "description": "the flight order, as Amadeus answered it",
                "headers": {
                    IDEMPOTENT_REPLAYED_HEADER: {
                        "description": "`true` when this is the stored first answer",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
                },
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{FlightOrderAnswer.__name__}"}
                    }
                },
            }
        },
        feature="amadeus",
    ),
)
