"""Amadeus proxy messages: the query string sent upstream and the booking fingerprint."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axiom_amadeus_proxy.booking import request_fingerprint
from axiom_shared.schemas import FlightBookInput, FlightSearchInput, utcnow

DEPART = (utcnow().date() + timedelta(days=10)).isoformat()
OFFER = {"type": "flight-offer", "id": "1", "price": {"grandTotal": "100.00"}}


def booking(**overrides: Any) -> FlightBookInput:
    values: dict[str, Any] = {
        "idempotency_key": "k1",
        "flightOffers": [OFFER],
        "travelers": [
            {"id": "1", "dateOfBirth": "1990-01-01", "name": {"firstName": "A", "lastName": "B"}}
        ],
    }
    values.update(overrides)
    return FlightBookInput.model_validate(values)


def test_query_params_use_amadeus_names_and_spelling() -> None:
    query = FlightSearchInput(
        originLocationCode="CAI",
        destinationLocationCode="JED",
        departureDate=DEPART,
        adults=2,
        nonStop=True,
        travelClass="BUSINESS",  # type: ignore[arg-type]
        max=5,
    )
    assert query.query_params() == {
        "originLocationCode": "CAI",
        "destinationLocationCode": "JED",
        "departureDate": DEPART,
        "adults": "2",
        "children": "0",
        "infants": "0",
        "travelClass": "BUSINESS",
        "nonStop": "true",
        "max": "5",
    }


def test_fingerprint_ignores_the_key_and_key_order_but_not_the_body() -> None:
    reordered = booking(flightOffers=[dict(reversed(list(OFFER.items())))], idempotency_key="k2")
    assert request_fingerprint(booking()) == request_fingerprint(reordered)
    assert request_fingerprint(booking()) != request_fingerprint(booking(user_id="someone"))
    other = booking(flightOffers=[{**OFFER, "id": "2"}])
    assert request_fingerprint(booking()) != request_fingerprint(other)
