"""Flight Offers Search requests (GET query or POST body) validated as Amadeus does, into one
`SearchQuery` the offer generator understands."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Any

from sandbox.amadeus.catalog import CURRENCIES
from sandbox.amadeus.errors import (
    INVALID_DATA_RECEIVED,
    INVALID_DATE,
    INVALID_FORMAT,
    MANDATORY_DATA_MISSING,
    Problems,
)

IATA = re.compile(r"^[A-Z]{3}$")
AIRLINE = re.compile(r"^[A-Z0-9]{2}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")
CABINS = ("ECONOMY", "PREMIUM_ECONOMY", "BUSINESS", "FIRST")
TRAVELER_TYPES = ("ADULT", "CHILD", "SENIOR", "YOUNG", "HELD_INFANT", "SEATED_INFANT", "STUDENT")
MAX_RESULTS = 250
MAX_DAYS_AHEAD = 365


@dataclass(frozen=True, slots=True)
class Leg:
    id: str
    origin: str
    destination: str
    departure_date: date
    earliest_time: time | None = None


@dataclass(frozen=True, slots=True)
class Traveler:
    id: str
    traveler_type: str
    associated_adult_id: str | None = None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    legs: tuple[Leg, ...]
    travelers: tuple[Traveler, ...]
    cabin: str = "ECONOMY"
    max_connections: int | None = None
    currency: str = "EUR"
    included_carriers: frozenset[str] = frozenset()
    excluded_carriers: frozenset[str] = frozenset()
    max_results: int = MAX_RESULTS
    max_price: int | None = None

    @property
    def seats_needed(self) -> int:
        return sum(1 for t in self.travelers if t.traveler_type != "HELD_INFANT")


def _check_date(problems: Problems, raw: str, today: date, **where: str) -> date | None:
    if not ISO_DATE.match(raw):
        problems.add(INVALID_FORMAT, "Invalid date format - expected YYYY-MM-DD", **where)
        return None
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        problems.add(INVALID_FORMAT, "Invalid date - expected a calendar date", **where)
        return None
    if value < today:
        problems.add(INVALID_DATE, "Date/Time is in the past", **where)
        return None
    if value > today + timedelta(days=MAX_DAYS_AHEAD):
        problems.add(INVALID_DATE, "Date/Time is more than 365 days ahead", **where)
        return None
    return value


def _int_param(
    problems: Problems, query: Mapping[str, str], name: str, low: int, high: int
) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,4}", raw):
        problems.add(INVALID_FORMAT, "should be an integer", parameter=name, example=str(low))
        return None
    value = int(raw)
    if not low <= value <= high:
        problems.add(INVALID_DATA_RECEIVED, f"must be between {low} and {high}", parameter=name)
        return None
    return value


def _airlines(problems: Problems, raw: str | None, name: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    codes = raw.split(",")
    if not codes or len(codes) > 99 or not all(AIRLINE.match(c) for c in codes):
        problems.add(
            INVALID_FORMAT,
            "comma-separated 2-character airline codes",
            parameter=name,
            example="AF,LH",
        )
        return frozenset()
    return frozenset(codes)


def _currency(problems: Problems, raw: str | None, **where: str) -> str:
    if raw is None:
        return "EUR"
    if not CURRENCY.match(raw):
        problems.add(INVALID_FORMAT, "ISO 4217 currency code expected", example="EUR", **where)
    elif raw not in CURRENCIES:
        problems.add(INVALID_DATA_RECEIVED, "Currency not supported", **where)
    return raw


def parse_search_query(query: Mapping[str, str], today: date) -> SearchQuery:
    """GET /v2/shopping/flight-offers query string."""
    problems = Problems()
    for name in ("originLocationCode", "destinationLocationCode", "departureDate", "adults"):
        if not query.get(name):
            problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", parameter=name)
    codes: dict[str, str] = {}
    for name in ("originLocationCode", "destinationLocationCode"):
        raw = query.get(name)
        if raw and not IATA.match(raw):
            problems.add(
                INVALID_FORMAT,
                "City/Airport - 3 characters IATA code",
                parameter=name,
                example="PAR",
            )
        elif raw:
            codes[name] = raw
    origin, destination = codes.get("originLocationCode"), codes.get("destinationLocationCode")
    if origin and origin == destination:
        problems.add(
            INVALID_DATA_RECEIVED,
            "Origin and destination must differ",
            parameter="destinationLocationCode",
        )
    departure = return_date = None
    if query.get("departureDate"):
        departure = _check_date(problems, query["departureDate"], today, parameter="departureDate")
    if query.get("returnDate"):
        return_date = _check_date(problems, query["returnDate"], today, parameter="returnDate")
        if departure and return_date and return_date < departure:
            problems.add(
                INVALID_DATE, "Return date is before departure date", parameter="returnDate"
            )
    adults = _int_param(problems, query, "adults", 1, 9) if query.get("adults") else None
    children = _int_param(problems, query, "children", 0, 9) or 0
    infants = _int_param(problems, query, "infants", 0, 9) or 0
    if adults is not None and infants > adults:
        problems.add(
            INVALID_DATA_RECEIVED,
            "Number of infants cannot exceed the number of adults",
            parameter="infants",
        )
    if adults is not None and adults + children > 9:
        problems.add(
            INVALID_DATA_RECEIVED,
            "Total number of seated travelers (adults and children) cannot exceed 9",
            parameter="children",
        )
    cabin = query.get("travelClass", "ECONOMY")
    if cabin not in CABINS:
        problems.add(
            INVALID_FORMAT,
            "travelClass must be one of " + ", ".join(CABINS),
            parameter="travelClass",
            example="ECONOMY",
        )
    included = _airlines(problems, query.get("includedAirlineCodes"), "includedAirlineCodes")
    excluded = _airlines(problems, query.get("excludedAirlineCodes"), "excludedAirlineCodes")
    if "includedAirlineCodes" in query and "excludedAirlineCodes" in query:
        problems.add(
            INVALID_DATA_RECEIVED,
            "includedAirlineCodes and excludedAirlineCodes cannot be used together",
            parameter="excludedAirlineCodes",
        )
    non_stop = query.get("nonStop", "false")
    if non_stop not in ("true", "false"):
        problems.add(
            INVALID_FORMAT, "should be true or false", parameter="nonStop", example="false"
        )
    currency = _currency(problems, query.get("currencyCode"), parameter="currencyCode")
    max_price = _int_param(problems, query, "maxPrice", 1, 10_000_000)
    max_results = _int_param(problems, query, "max", 1, MAX_RESULTS) or MAX_RESULTS
    problems.raise_if_any()
    assert origin
    assert destination
    assert departure
    assert adults is not None
    legs = [Leg("1", origin, destination, departure)]
    if return_date:
        legs.append(Leg("2", destination, origin, return_date))
    travelers = [Traveler(str(i + 1), "ADULT") for i in range(adults)]
    travelers += [Traveler(str(adults + i + 1), "CHILD") for i in range(children)]
    travelers += [
        Traveler(str(adults + children + i + 1), "HELD_INFANT", associated_adult_id=str(i + 1))
        for i in range(infants)
    ]
    return SearchQuery(
        legs=tuple(legs),
        travelers=tuple(travelers),
        cabin=cabin,
        max_connections=0 if non_stop == "true" else None,
        currency=currency,
        included_carriers=included,
        excluded_carriers=excluded,
        max_results=max_results,
        max_price=max_price,
    )


def _dig(body: Any, *path: str | int) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(body, list) or step >= len(body):
                return None
            body = body[step]
        elif isinstance(body, dict):
            body = body.get(step)
        else:
            return None
    return body


def parse_search_body(body: Any, today: date) -> SearchQuery:
    """POST /v2/shopping/flight-offers JSON body; errors point into the body."""
    problems = Problems()
    if not isinstance(body, dict):
        problems.add(INVALID_FORMAT, "The body must be a JSON object", pointer="/")
        problems.raise_if_any()
    legs = _parse_legs(problems, body.get("originDestinations"), today)
    travelers = _parse_travelers(problems, body.get("travelers"))
    sources = body.get("sources")
    if sources is None:
        problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", pointer="/sources")
    elif not isinstance(sources, list) or "GDS" not in sources:
        problems.add(INVALID_FORMAT, "sources must contain GDS", pointer="/sources", example="GDS")
    raw_currency = body.get("currencyCode")
    currency = _currency(
        problems,
        raw_currency if isinstance(raw_currency, str) or raw_currency is None else "?",
        pointer="/currencyCode",
    )
    criteria = body.get("searchCriteria") or {}
    max_results = _dig(criteria, "maxFlightOffers")
    if max_results is None:
        max_results = MAX_RESULTS
    elif not isinstance(max_results, int) or not 1 <= max_results <= MAX_RESULTS:
        problems.add(
            INVALID_DATA_RECEIVED,
            f"must be between 1 and {MAX_RESULTS}",
            pointer="/searchCriteria/maxFlightOffers",
        )
        max_results = MAX_RESULTS
    carriers = _dig(criteria, "flightFilters", "carrierRestrictions") or {}
    included = _carrier_list(problems, carriers, "includedCarrierCodes")
    excluded = _carrier_list(problems, carriers, "excludedCarrierCodes")
    if included and excluded:
        problems.add(
            INVALID_DATA_RECEIVED,
            "includedCarrierCodes and excludedCarrierCodes cannot be used together",
            pointer="/searchCriteria/flightFilters/carrierRestrictions",
        )
    max_connections = _dig(
        criteria, "flightFilters", "connectionRestriction", "maxNumberOfConnections"
    )
    if max_connections is not None and (
        not isinstance(max_connections, int) or not 0 <= max_connections <= 2
    ):
        problems.add(
            INVALID_DATA_RECEIVED,
            "must be between 0 and 2",
            pointer="/searchCriteria/flightFilters/connectionRestriction/maxNumberOfConnections",
        )
        max_connections = None
    cabin = _dig(criteria, "flightFilters", "cabinRestrictions", 0, "cabin") or "ECONOMY"
    if cabin not in CABINS:
        problems.add(
            INVALID_FORMAT,
            "cabin must be one of " + ", ".join(CABINS),
            pointer="/searchCriteria/flightFilters/cabinRestrictions[0]/cabin",
        )
    problems.raise_if_any()
    return SearchQuery(
        legs=tuple(legs),
        travelers=tuple(travelers),
        cabin=cabin,
        max_connections=max_connections,
        currency=currency,
        included_carriers=included,
        excluded_carriers=excluded,
        max_results=max_results,
    )


def _carrier_list(problems: Problems, carriers: Any, name: str) -> frozenset[str]:
    codes = _dig(carriers, name)
    if codes is None:
        return frozenset()
    if (
        not isinstance(codes, list)
        or not codes
        or not all(isinstance(c, str) and AIRLINE.match(c) for c in codes)
    ):
        problems.add(
            INVALID_FORMAT,
            "a list of 2-character airline codes",
            pointer=f"/searchCriteria/flightFilters/carrierRestrictions/{name}",
        )
        return frozenset()
    return frozenset(codes)


def _parse_legs(problems: Problems, raw: Any, today: date) -> list[Leg]:
    if raw is None:
        problems.add(
            MANDATORY_DATA_MISSING, "This field must be filled.", pointer="/originDestinations"
        )
        return []
    if not isinstance(raw, list) or not 1 <= len(raw) <= 6:
        problems.add(
            INVALID_FORMAT, "between 1 and 6 originDestinations", pointer="/originDestinations"
        )
        return []
    legs: list[Leg] = []
    for i, item in enumerate(raw):
        where = f"/originDestinations[{i}]"
        if not isinstance(item, dict):
            problems.add(INVALID_FORMAT, "must be an object", pointer=where)
            continue
        leg_id = item.get("id")
        if not isinstance(leg_id, str) or not leg_id:
            problems.add(
                MANDATORY_DATA_MISSING, "This field must be filled.", pointer=where + "/id"
            )
        ends: list[str] = []
        for name in ("originLocationCode", "destinationLocationCode"):
            code = item.get(name)
            if code is None:
                problems.add(
                    MANDATORY_DATA_MISSING, "This field must be filled.", pointer=f"{where}/{name}"
                )
            elif not isinstance(code, str) or not IATA.match(code):
                problems.add(
                    INVALID_FORMAT,
                    "City/Airport - 3 characters IATA code",
                    pointer=f"{where}/{name}",
                    example="PAR",
                )
            else:
                ends.append(code)
        raw_date = _dig(item, "departureDateTimeRange", "date")
        day = None
        if raw_date is None:
            problems.add(
                MANDATORY_DATA_MISSING,
                "This field must be filled.",
                pointer=f"{where}/departureDateTimeRange/date",
            )
        elif isinstance(raw_date, str):
            day = _check_date(
                problems, raw_date, today, pointer=f"{where}/departureDateTimeRange/date"
            )
        else:
            problems.add(
                INVALID_FORMAT,
                "Invalid date format - expected YYYY-MM-DD",
                pointer=f"{where}/departureDateTimeRange/date",
            )
        raw_time = _dig(item, "departureDateTimeRange", "time")
        earliest = None
        if raw_time is not None:
            if isinstance(raw_time, str) and ISO_TIME.match(raw_time):
                try:
                    earliest = time.fromisoformat(raw_time)
                except ValueError:
                    earliest = None
            if earliest is None:
                problems.add(
                    INVALID_FORMAT,
                    "Invalid time format - expected hh:mm:ss",
                    pointer=f"{where}/departureDateTimeRange/time",
                )
        if len(ends) == 2 and ends[0] == ends[1]:
            problems.add(
                INVALID_DATA_RECEIVED,
                "Origin and destination must differ",
                pointer=f"{where}/destinationLocationCode",
            )
        if len(ends) == 2 and day is not None and isinstance(leg_id, str) and leg_id:
            legs.append(Leg(leg_id, ends[0], ends[1], day, earliest))
    return legs


def _parse_travelers(problems: Problems, raw: Any) -> list[Traveler]:
    if raw is None:
        problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", pointer="/travelers")
        return []
    if not isinstance(raw, list) or not 1 <= len(raw) <= 18:
        problems.add(INVALID_FORMAT, "between 1 and 18 travelers", pointer="/travelers")
        return []
    travelers: list[Traveler] = []
    index: dict[str, int] = {}  # traveler id -> its position in the body, for error pointers
    for i, item in enumerate(raw):
        where = f"/travelers[{i}]"
        traveler_id = _dig(item, "id")
        kind = _dig(item, "travelerType")
        if not isinstance(traveler_id, str) or not traveler_id:
            problems.add(
                MANDATORY_DATA_MISSING, "This field must be filled.", pointer=where + "/id"
            )
            continue
        if kind not in TRAVELER_TYPES:
            problems.add(
                INVALID_FORMAT,
                "travelerType must be one of " + ", ".join(TRAVELER_TYPES),
                pointer=where + "/travelerType",
            )
            continue
        adult = _dig(item, "associatedAdultId")
        index.setdefault(traveler_id, i)
        travelers.append(Traveler(traveler_id, kind, adult if isinstance(adult, str) else None))
    ids = [t.id for t in travelers]
    if len(set(ids)) != len(ids):
        problems.add(INVALID_DATA_RECEIVED, "Traveler ids must be unique", pointer="/travelers")
    adults = {t.id for t in travelers if t.traveler_type not in ("CHILD", "HELD_INFANT")}
    for traveler in travelers:
        if traveler.traveler_type == "HELD_INFANT" and traveler.associated_adult_id not in adults:
            problems.add(
                INVALID_DATA_RECEIVED,
                "A held infant needs the id of an adult traveler in associatedAdultId",
                pointer=f"/travelers[{index[traveler.id]}]/associatedAdultId",
            )
    if travelers and sum(1 for t in travelers if t.traveler_type != "HELD_INFANT") > 9:
        problems.add(INVALID_DATA_RECEIVED, "At most 9 seated travelers", pointer="/travelers")
    return travelers
