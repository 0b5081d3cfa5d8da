"""Amadeus proxy messages: flight offers search and flight booking, in Amadeus's field names.

A search is checked here with Amadeus's own rules (IATA codes, dates, traveler counts, airline
filters) so that a request Amadeus would refuse never costs an upstream call or quota. Each
cross-field rule is checked on the later field, so a 422 names the field to fix.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from axiom_shared.schemas.base import Message, StrictModel, utcnow

#: How far ahead Amadeus lets a flight be searched.
MAX_DAYS_AHEAD = 365
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _calendar_date(value: str) -> str:
    if not _ISO_DATE.match(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a calendar date (YYYY-MM-DD)") from None
    return value


def _travel_date(value: str) -> str:
    """Not in the past, at most a year ahead (UTC dates, as the Amadeus double uses)."""
    day = date.fromisoformat(_calendar_date(value))
    today = utcnow().date()
    if day < today:
        raise ValueError("must not be in the past")
    if day > today + timedelta(days=MAX_DAYS_AHEAD):
        raise ValueError(f"must be at most {MAX_DAYS_AHEAD} days ahead")
    return value


def _past_date(value: str) -> str:
    if date.fromisoformat(_calendar_date(value)) > utcnow().date():
        raise ValueError("must not be in the future")
    return value


IataCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="3-letter IATA code")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
TravelDate = Annotated[
    str, AfterValidator(_travel_date), Field(json_schema_extra={"format": "date"})
]
BirthDate = Annotated[str, AfterValidator(_past_date), Field(json_schema_extra={"format": "date"})]
AirlineCodes = Annotated[
    str,
    Field(
        pattern=r"^[A-Z0-9]{2}(,[A-Z0-9]{2}){0,98}$",
        description="comma-separated 2-character airline codes, e.g. AF,LH",
    ),
]
Count = Annotated[int, Field(strict=True)]


class TravelClass(StrEnum):
    ECONOMY = "ECONOMY"
    PREMIUM_ECONOMY = "PREMIUM_ECONOMY"
    BUSINESS = "BUSINESS"
    FIRST = "FIRST"


class FlightSearchInput(Message):
    """`GET /v2/shopping/flight-offers`'s parameters, with the same names and rules."""

    SCHEMA: ClassVar[str] = "amadeus.search.input/1"

    originLocationCode: IataCode
    destinationLocationCode: IataCode
    departureDate: TravelDate
    returnDate: TravelDate | None = None
    adults: Count = Field(ge=1, le=9)
    children: Count = Field(default=0, ge=0, le=9)
    infants: Count = Field(default=0, ge=0, le=9)
    travelClass: TravelClass | None = None
    includedAirlineCodes: AirlineCodes | None = None
    excludedAirlineCodes: AirlineCodes | None = None
    nonStop: bool = Field(default=False, strict=True)
    currencyCode: CurrencyCode | None = None
    maxPrice: Count | None = Field(default=None, gt=0)
    max: Count | None = Field(default=None, ge=1, le=250)

    @field_validator("destinationLocationCode")
    @classmethod
    def _not_origin(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("originLocationCode"):
            raise ValueError("must differ from originLocationCode")
        return value

    @field_validator("returnDate")
    @classmethod
    def _after_departure(cls, value: str | None, info: ValidationInfo) -> str | None:
        departure = info.data.get("departureDate")
        if value is not None and departure is not None and value < departure:
            raise ValueError("must not be before departureDate")
        return value

    @field_validator("children")
    @classmethod
    def _seated_at_most_nine(cls, value: int, info: ValidationInfo) -> int:
        adults = info.data.get("adults")
        if adults is not None and adults + value > 9:
            raise ValueError("adults + children must be at most 9")
        return value

    @field_validator("infants")
    @classmethod
    def _infant_per_adult(cls, value: int, info: ValidationInfo) -> int:
        adults = info.data.get("adults")
        if adults is not None and value > adults:
            raise ValueError("must not exceed adults (each infant sits on an adult's lap)")
        return value

    @field_validator("excludedAirlineCodes")
    @classmethod
    def _one_airline_filter(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("includedAirlineCodes") is not None:
            raise ValueError("give includedAirlineCodes or excludedAirlineCodes, not both")
        return value

    def query_params(self) -> dict[str, str]:
        """The Amadeus query string: only what was given, in Amadeus's spelling."""
        params: dict[str, str] = {}
        for name, value in self.model_dump(exclude={"schema_"}, exclude_none=True).items():
            if isinstance(value, bool):
                params[name] = "true" if value else "false"
            else:
                params[name] = str(value)
        return params


class FlightSearchResult(Message):
    SCHEMA: ClassVar[str] = "amadeus.search.result/1"
    #: Amadeus's answer as it came: `{"meta", "data": [flight-offer], "dictionaries"}`.
    amadeus_response: dict[str, Any]


class TravelerName(StrictModel):
    firstName: str = Field(min_length=1, max_length=56)
    lastName: str = Field(min_length=1, max_length=57)


class Phone(StrictModel):
    deviceType: str | None = Field(default=None, pattern=r"^(MOBILE|LANDLINE|FAX)$")
    countryCallingCode: str = Field(pattern=r"^[0-9]{1,3}$")
    number: str = Field(pattern=r"^[0-9]{1,15}$")


class TravelerContact(StrictModel):
    emailAddress: str | None = Field(
        default=None, max_length=90, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )
    phones: list[Phone] | None = Field(default=None, max_length=3)


class Gender(StrEnum):
    MALE = "MALE"
    FEMALE = "FEMALE"


class Traveler(StrictModel):
    """A traveler of a flight order, with Amadeus's field names."""

    id: str = Field(min_length=1, max_length=10)
    dateOfBirth: BirthDate
    name: TravelerName
    gender: Gender | None = None
    contact: TravelerContact | None = None
    #: Passports etc., passed to Amadeus as given (their rules vary by airline).
    documents: list[dict[str, Any]] | None = Field(default=None, max_length=5)


def _flight_offer(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type") != "flight-offer":
        raise ValueError('must be a flight offer ("type": "flight-offer") from a search')
    return value


FlightOffer = Annotated[dict[str, Any], AfterValidator(_flight_offer)]


class FlightBookInput(Message):
    """A flight order. `idempotency_key` makes a retry safe: the same key and body get the
    first answer again; the same key with another body is refused."""

    SCHEMA: ClassVar[str] = "amadeus.book.input/1"

    idempotency_key: str = Field(min_length=1, max_length=255)
    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    flightOffers: list[FlightOffer] = Field(min_length=1, max_length=6)
    travelers: list[Traveler] = Field(min_length=1, max_length=18)

    @field_validator("travelers")
    @classmethod
    def _unique_ids(cls, value: list[Traveler]) -> list[Traveler]:
        ids = [t.id for t in value]
        if len(set(ids)) != len(ids):
            raise ValueError("traveler ids must be unique")
        return value

    def booking_body(self) -> dict[str, Any]:
        """What the fingerprint covers: everything but the key itself (and the schema tag)."""
        return self.model_dump(
            mode="json", exclude={"schema_", "idempotency_key"}, exclude_none=True
        )


class FlightBookResult(Message):
    SCHEMA: ClassVar[str] = "amadeus.book.result/1"
    idempotency_key: str
    #: The Amadeus flight-order id (stored as `agent_transactions.external_booking_ref`).
    order_id: str
    #: True when this is the stored answer of an earlier request with the same key.
    replayed: bool = False
    #: Amadeus's answer as it came: `{"data": {"type": "flight-order", "id", ...}, ...}`.
    amadeus_response: dict[str, Any]
