"""Deterministic flight offers: the same query always yields the same offers.

The flights on an itinerary (carriers, times, connections, seats, base fares) are seeded by
the legs alone, as a real schedule would be; the query's filters (non-stop, airlines, seats,
max price, max) then only remove offers, and cabin, travelers and currency only reprice them.
So a filtered answer is always a subset of the unfiltered one.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sandbox.amadeus.catalog import (
    AIRCRAFT,
    CARRIERS,
    CURRENCIES,
    NARROW_BODY,
    WIDE_BODY,
    airport,
    distance_km,
    stable_int,
)
from sandbox.amadeus.search import Leg, SearchQuery

CENT = Decimal("0.01")
CABIN_FACTOR = {
    "ECONOMY": Decimal("1"),
    "PREMIUM_ECONOMY": Decimal("1.6"),
    "BUSINESS": Decimal("3.2"),
    "FIRST": Decimal("5.5"),
}
CABIN_CLASSES = {
    "ECONOMY": "YBMHKLQTV",
    "PREMIUM_ECONOMY": "WEP",
    "BUSINESS": "JCDZ",
    "FIRST": "FA",
}
# Share of the adult base fare, and of the taxes, each traveler type pays.
TRAVELER_FARE = {
    "ADULT": (Decimal("1"), Decimal("1")),
    "SENIOR": (Decimal("0.9"), Decimal("1")),
    "YOUNG": (Decimal("0.9"), Decimal("1")),
    "STUDENT": (Decimal("0.9"), Decimal("1")),
    "CHILD": (Decimal("0.75"), Decimal("1")),
    "SEATED_INFANT": (Decimal("0.75"), Decimal("0.5")),
    "HELD_INFANT": (Decimal("0.1"), Decimal("0.2")),
}


@dataclass(frozen=True, slots=True)
class Flight:
    """One scheduled itinerary option before it is priced for a query."""

    carrier: str
    itineraries: tuple[tuple[dict[str, Any], ...], ...]  # per leg, its segments
    base_fare_eur: Decimal  # one adult, economy
    taxes_eur: Decimal
    seats: int
    fare_basis: str
    booking_class_seed: int

    @property
    def connections(self) -> int:
        return max(len(segments) - 1 for segments in self.itineraries)


def iso_duration(minutes: int) -> str:
    hours, mins = divmod(minutes, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{mins}M" if mins or not hours else "")


def _block_minutes(km: float) -> int:
    return int(round((35 + km / 820 * 60) / 5) * 5)


def _hub_for(carrier: str, leg: Leg, rng: random.Random) -> str:
    hub = CARRIERS[carrier][1]
    if hub not in (leg.origin, leg.destination):
        return hub
    others = sorted(h for _, h in CARRIERS.values() if h not in (leg.origin, leg.destination))
    return rng.choice(others)


def _segments(
    leg: Leg, carrier: str, connections: int, rng: random.Random, first_id: int
) -> tuple[dict[str, Any], ...]:
    stops = [leg.origin]
    if connections:
        stops.append(_hub_for(carrier, leg, rng))
    stops.append(leg.destination)
    earliest = leg.earliest_time.hour * 60 + leg.earliest_time.minute if leg.earliest_time else 0
    start = max(earliest, rng.randrange(6 * 60, 22 * 60, 5))
    clock = datetime.combine(leg.departure_date, datetime.min.time()) + timedelta(minutes=start)
    segments: list[dict[str, Any]] = []
    for n, (here, there) in enumerate(itertools.pairwise(stops)):
        km = distance_km(here, there)
        minutes = _block_minutes(km)
        arrival = clock + timedelta(minutes=minutes)
        segments.append(
            {
                "departure": {
                    "iataCode": here,
                    "terminal": str(rng.randint(1, 3)),
                    "at": clock.isoformat(timespec="seconds"),
                },
                "arrival": {"iataCode": there, "at": arrival.isoformat(timespec="seconds")},
                "carrierCode": carrier,
                "number": str(rng.randint(10, 9899)),
                "aircraft": {"code": rng.choice(NARROW_BODY if km < 3000 else WIDE_BODY)},
                "operating": {"carrierCode": carrier},
                "duration": iso_duration(minutes),
                "id": str(first_id + n),
                "numberOfStops": 0,
                "blacklistedInEU": False,
            }
        )
        clock = arrival + timedelta(minutes=rng.randrange(55, 240, 5))
    return tuple(segments)


def schedule(legs: tuple[Leg, ...]) -> list[Flight]:
    """Every flight offered on these legs, seeded by the legs alone."""
    rng = random.Random(
        stable_int(*((leg.origin, leg.destination, leg.departure_date) for leg in legs))
    )
    route_km = sum(distance_km(leg.origin, leg.destination) for leg in legs)
    carriers = rng.sample(sorted(CARRIERS), k=rng.randint(4, 7))
    flights: list[Flight] = []
    for _ in range(rng.randint(10, 24)):
        carrier = rng.choice(carriers)
        itineraries: list[tuple[dict[str, Any], ...]] = []
        next_segment_id = 1
        for leg in legs:
            km = distance_km(leg.origin, leg.destination)
            direct_chance = 0.65 if km < 2500 else 0.35
            connections = 0 if rng.random() < direct_chance else 1
            segments = _segments(leg, carrier, connections, rng, next_segment_id)
            next_segment_id += len(segments)
            itineraries.append(segments)
        connecting = any(len(s) > 1 for s in itineraries)
        fare = Decimal(str(45 + route_km * 0.085)) * Decimal(str(rng.uniform(0.8, 1.35)))
        if connecting:
            fare *= Decimal("0.85")
        flights.append(
            Flight(
                carrier=carrier,
                itineraries=tuple(itineraries),
                base_fare_eur=fare.quantize(Decimal("1")),
                taxes_eur=Decimal(str(rng.uniform(18, 45) * len(legs))).quantize(CENT),
                seats=rng.randint(1, 9),
                fare_basis="".join(rng.choice("ABCDEFGHKLMNPQRSTUVWXY") for _ in range(5)),
                booking_class_seed=rng.randrange(1 << 30),
            )
        )
    return flights


def _money(amount: Decimal) -> str:
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def _price_offer(flight: Flight, query: SearchQuery, offer_id: str, today: date) -> dict[str, Any]:
    rate = CURRENCIES[query.currency][1]
    cabin_factor = CABIN_FACTOR[query.cabin]
    booking_class = random.Random(flight.booking_class_seed).choice(CABIN_CLASSES[query.cabin])
    bags = {"quantity": 2} if query.cabin in ("BUSINESS", "FIRST") else {"quantity": 1}
    segment_ids = [seg["id"] for segments in flight.itineraries for seg in segments]
    traveler_pricings: list[dict[str, Any]] = []
    total = base_total = Decimal(0)
    for traveler in query.travelers:
        fare_share, tax_share = TRAVELER_FARE[traveler.traveler_type]
        base = (flight.base_fare_eur * cabin_factor * fare_share * rate).quantize(CENT)
        taxes = (flight.taxes_eur * tax_share * rate).quantize(CENT)
        pricing: dict[str, Any] = {
            "travelerId": traveler.id,
            "fareOption": "STANDARD",
            "travelerType": traveler.traveler_type,
            "price": {
                "currency": query.currency,
                "total": _money(base + taxes),
                "base": _money(base),
            },
            "fareDetailsBySegment": [
                {
                    "segmentId": segment_id,
                    "cabin": query.cabin,
                    "fareBasis": booking_class + flight.fare_basis,
                    "class": booking_class,
                    "includedCheckedBags": bags,
                }
                for segment_id in segment_ids
            ],
        }
        if traveler.associated_adult_id:
            pricing["associatedAdultId"] = traveler.associated_adult_id
        traveler_pricings.append(pricing)
        total += base + taxes
        base_total += base
    first_departure = query.legs[0].departure_date
    last_ticketing = max(today, first_departure - timedelta(days=flight.booking_class_seed % 4))
    return {
        "type": "flight-offer",
        "id": offer_id,
        "source": "GDS",
        "instantTicketingRequired": False,
        "nonHomogeneous": False,
        "oneWay": False,
        "isUpsellOffer": False,
        "lastTicketingDate": last_ticketing.isoformat(),
        "lastTicketingDateTime": last_ticketing.isoformat(),
        "numberOfBookableSeats": flight.seats,
        "itineraries": [
            {"duration": _itinerary_duration(segments), "segments": list(segments)}
            for segments in flight.itineraries
        ],
        "price": {
            "currency": query.currency,
            "total": _money(total),
            "base": _money(base_total),
            "fees": [
                {"amount": "0.00", "type": "SUPPLIER"},
                {"amount": "0.00", "type": "TICKETING"},
            ],
            "grandTotal": _money(total),
        },
        "pricingOptions": {"fareType": ["PUBLISHED"], "includedCheckedBagsOnly": True},
        "validatingAirlineCodes": [flight.carrier],
        "travelerPricings": traveler_pricings,
    }


def _itinerary_duration(segments: tuple[dict[str, Any], ...]) -> str:
    start = datetime.fromisoformat(segments[0]["departure"]["at"])
    end = datetime.fromisoformat(segments[-1]["arrival"]["at"])
    return iso_duration(int((end - start).total_seconds() // 60))


def _admitted(flight: Flight, query: SearchQuery) -> bool:
    if query.max_connections is not None and flight.connections > query.max_connections:
        return False
    if query.included_carriers and flight.carrier not in query.included_carriers:
        return False
    if flight.carrier in query.excluded_carriers:
        return False
    # Amadeus only offers what can seat every traveler who needs a seat.
    return flight.seats >= query.seats_needed


def search_offers(query: SearchQuery, today: date) -> dict[str, Any]:
    """The whole Flight Offers Search answer: meta, data (cheapest first) and dictionaries."""
    candidates = [f for f in schedule(query.legs) if _admitted(f, query)]
    priced = [_price_offer(f, query, "0", today) for f in candidates]
    if query.max_price is not None:
        priced = [
            offer
            for offer in priced
            if max(Decimal(tp["price"]["total"]) for tp in offer["travelerPricings"])
            <= query.max_price
        ]
    priced.sort(key=lambda offer: Decimal(offer["price"]["grandTotal"]))
    offers = priced[: query.max_results]
    for n, offer in enumerate(offers, start=1):
        offer["id"] = str(n)
    if not offers:
        return {"meta": {"count": 0}, "data": []}
    return {
        "meta": {"count": len(offers)},
        "data": offers,
        "dictionaries": dictionaries(offers),
    }


def dictionaries(offers: list[dict[str, Any]]) -> dict[str, Any]:
    locations: dict[str, Any] = {}
    aircraft: dict[str, str] = {}
    carriers: dict[str, str] = {}
    currencies: dict[str, str] = {}
    for offer in offers:
        currency = offer.get("price", {}).get("currency")
        if currency in CURRENCIES:
            currencies[currency] = CURRENCIES[currency][0]
        for itinerary in offer.get("itineraries", []):
            for segment in itinerary.get("segments", []):
                for end in ("departure", "arrival"):
                    code = segment[end]["iataCode"]
                    place = airport(code)
                    locations[code] = {
                        "cityCode": place.city_code,
                        "countryCode": place.country_code,
                    }
                code = segment["aircraft"]["code"]
                aircraft[code] = AIRCRAFT.get(code, code)
                carrier = segment["carrierCode"]
                carriers[carrier] = CARRIERS[carrier][0] if carrier in CARRIERS else carrier
    return {
        "locations": locations,
        "aircraft": aircraft,
        "currencies": currencies,
        "carriers": carriers,
    }
