"""Flight Offers Price and Flight Create Orders: validation of the offers a client sends back,
and the orders the double remembers."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sandbox.amadeus.errors import (
    BOOKING_FAILURES,
    INVALID_DATA_RECEIVED,
    INVALID_FORMAT,
    MANDATORY_DATA_MISSING,
    PRICE_DISCREPANCY,
    AmadeusError,
    Problems,
)
from sandbox.amadeus.offers import dictionaries

QUEUING_OFFICE_ID = "NCE4D31SB"
MONEY = re.compile(r"^\d+(\.\d{1,2})?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _money_ok(value: Any) -> bool:
    return isinstance(value, str) and bool(MONEY.match(value))


def check_offers(problems: Problems, offers: Any, where: str) -> list[dict[str, Any]]:
    """The flight offers a client sends back must still look like the ones it was given."""
    if offers is None:
        problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", pointer=where)
        return []
    if not isinstance(offers, list) or not 1 <= len(offers) <= 6:
        problems.add(INVALID_FORMAT, "between 1 and 6 flight offers", pointer=where)
        return []
    valid: list[dict[str, Any]] = []
    for i, offer in enumerate(offers):
        at = f"{where}[{i}]"
        if not isinstance(offer, dict) or offer.get("type") != "flight-offer":
            problems.add(INVALID_FORMAT, "type must be flight-offer", pointer=at + "/type")
            continue
        before = len(problems.errors)
        itineraries = offer.get("itineraries")
        if not isinstance(itineraries, list) or not itineraries:
            problems.add(
                MANDATORY_DATA_MISSING, "This field must be filled.", pointer=at + "/itineraries"
            )
        else:
            for j, itinerary in enumerate(itineraries):
                segments = itinerary.get("segments") if isinstance(itinerary, dict) else None
                if (
                    not isinstance(segments, list)
                    or not segments
                    or not all(_segment_ok(s) for s in segments)
                ):
                    problems.add(
                        INVALID_FORMAT,
                        "segments need departure, arrival and carrierCode",
                        pointer=f"{at}/itineraries[{j}]/segments",
                    )
        price = offer.get("price")
        if not isinstance(price, dict) or not _money_ok(price.get("grandTotal")):
            problems.add(
                INVALID_FORMAT, "grandTotal must be a decimal string", pointer=at + "/price"
            )
        pricings = offer.get("travelerPricings")
        if not isinstance(pricings, list) or not pricings:
            problems.add(
                MANDATORY_DATA_MISSING,
                "This field must be filled.",
                pointer=at + "/travelerPricings",
            )
        elif not all(
            isinstance(tp, dict)
            and isinstance(tp.get("travelerId"), str)
            and _money_ok(tp.get("price", {}).get("total"))
            for tp in pricings
        ):
            problems.add(
                INVALID_FORMAT,
                "each traveler pricing needs travelerId and price.total",
                pointer=at + "/travelerPricings",
            )
        elif isinstance(price, dict) and _money_ok(price.get("grandTotal")):
            # A tampered price is caught here, as Amadeus reprices what it is sent.
            summed = sum(Decimal(tp["price"]["total"]) for tp in pricings)
            if summed != Decimal(price["grandTotal"]):
                problems.add(
                    INVALID_DATA_RECEIVED,
                    f"grandTotal {price['grandTotal']} is not the sum of the traveler prices",
                    pointer=at + "/price/grandTotal",
                )
        if len(problems.errors) == before:
            valid.append(offer)
    return valid


def _segment_ok(segment: Any) -> bool:
    return (
        isinstance(segment, dict)
        and isinstance(segment.get("departure"), dict)
        and isinstance(segment["departure"].get("iataCode"), str)
        and isinstance(segment.get("arrival"), dict)
        and isinstance(segment["arrival"].get("iataCode"), str)
        and isinstance(segment.get("carrierCode"), str)
        and isinstance(segment.get("aircraft", {}).get("code"), str)
    )


def price_offers(body: Any, *, price_discrepancy: bool) -> dict[str, Any]:
    problems = Problems()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", pointer="/data")
        problems.raise_if_any()
        raise AssertionError("unreachable")
    if data.get("type") != "flight-offers-pricing":
        problems.add(
            INVALID_FORMAT,
            "type must be flight-offers-pricing",
            pointer="/data/type",
            example="flight-offers-pricing",
        )
    offers = check_offers(problems, data.get("flightOffers"), "/data/flightOffers")
    problems.raise_if_any()
    if price_discrepancy:
        raise _discrepancy(offers[0], "/data/flightOffers[0]/price/grandTotal")
    priced = copy.deepcopy(offers)
    for offer in priced:
        offer["price"]["billingCurrency"] = offer["price"].get("currency", "EUR")
    return {
        "data": {
            "type": "flight-offers-pricing",
            "flightOffers": priced,
            "bookingRequirements": {
                "emailAddressRequired": True,
                "mobilePhoneNumberRequired": True,
            },
        },
        "dictionaries": {"locations": dictionaries(priced)["locations"]},
    }


def _discrepancy(offer: dict[str, Any], pointer: str) -> AmadeusError:
    asked = Decimal(offer["price"]["grandTotal"])
    current = (asked * Decimal("1.07")).quantize(Decimal("0.01"))
    return AmadeusError.single(
        400,
        PRICE_DISCREPANCY,
        f"Current grandTotal price ({current}) is different from request one ({asked})",
        pointer=pointer,
    )


def _check_travelers(problems: Problems, travelers: Any, today: date) -> list[dict[str, Any]]:
    if travelers is None:
        problems.add(
            MANDATORY_DATA_MISSING, "This field must be filled.", pointer="/data/travelers"
        )
        return []
    if not isinstance(travelers, list) or not 1 <= len(travelers) <= 18:
        problems.add(INVALID_FORMAT, "between 1 and 18 travelers", pointer="/data/travelers")
        return []
    for i, traveler in enumerate(travelers):
        at = f"/data/travelers[{i}]"
        if not isinstance(traveler, dict):
            problems.add(INVALID_FORMAT, "must be an object", pointer=at)
            continue
        if not isinstance(traveler.get("id"), str) or not traveler["id"]:
            problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", pointer=at + "/id")
        birth = traveler.get("dateOfBirth")
        try:
            born = date.fromisoformat(birth) if isinstance(birth, str) else None
        except ValueError:
            born = None
        if born is None or not ISO_DATE.match(str(birth)) or born > today:
            problems.add(
                INVALID_FORMAT,
                "dateOfBirth must be a past date, YYYY-MM-DD",
                pointer=at + "/dateOfBirth",
                example="1982-01-16",
            )
        name = traveler.get("name")
        for part in ("firstName", "lastName"):
            value = name.get(part) if isinstance(name, dict) else None
            if not isinstance(value, str) or not value.strip():
                problems.add(
                    MANDATORY_DATA_MISSING,
                    "This field must be filled.",
                    pointer=f"{at}/name/{part}",
                )
        gender = traveler.get("gender")
        if gender is not None and gender not in ("MALE", "FEMALE", "UNSPECIFIED", "UNDISCLOSED"):
            problems.add(INVALID_FORMAT, "gender must be MALE or FEMALE", pointer=at + "/gender")
    return [t for t in travelers if isinstance(t, dict)]


@dataclass
class OrderBook:
    """Orders kept in memory; ids and record locators come from a counter, so runs repeat."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    counter: int = 0

    def create(self, body: Any, *, failure_code: int | None, now: datetime) -> dict[str, Any]:
        problems = Problems()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            problems.add(MANDATORY_DATA_MISSING, "This field must be filled.", pointer="/data")
            problems.raise_if_any()
            raise AssertionError("unreachable")
        if data.get("type") != "flight-order":
            problems.add(
                INVALID_FORMAT,
                "type must be flight-order",
                pointer="/data/type",
                example="flight-order",
            )
        offers = check_offers(problems, data.get("flightOffers"), "/data/flightOffers")
        travelers = _check_travelers(problems, data.get("travelers"), now.date())
        problems.raise_if_any()
        traveler_ids = {t.get("id") for t in travelers}
        for i, offer in enumerate(offers):
            priced_ids = {tp["travelerId"] for tp in offer["travelerPricings"]}
            if priced_ids != traveler_ids:
                problems.add(
                    INVALID_DATA_RECEIVED,
                    "travelers must match the flight offer's travelerPricings ids",
                    pointer=f"/data/flightOffers[{i}]/travelerPricings",
                )
        problems.raise_if_any()
        if failure_code is not None:
            if failure_code == PRICE_DISCREPANCY[0]:
                raise _discrepancy(offers[0], "/data/flightOffers[0]/price/grandTotal")
            code_title, detail = BOOKING_FAILURES[failure_code]
            raise AmadeusError.single(400, code_title, detail, pointer="/data/flightOffers[0]")
        self.counter += 1
        order_id = base64.urlsafe_b64encode(f"AXSBX{self.counter:07d}".encode()).decode()
        created = now.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")
        reference = _record_locator(self.counter)
        order = {
            "type": "flight-order",
            "id": order_id,
            "queuingOfficeId": QUEUING_OFFICE_ID,
            "associatedRecords": [
                {
                    "reference": reference,
                    "creationDateTime": created,
                    "originSystemCode": "GDS",
                    "flightOfferId": offer.get("id", str(n)),
                }
                for n, offer in enumerate(offers, start=1)
            ],
            "flightOffers": copy.deepcopy(offers),
            "travelers": copy.deepcopy(travelers),
            "ticketingAgreement": copy.deepcopy(
                data.get("ticketingAgreement") or {"option": "DELAY_TO_CANCEL", "delay": "6D"}
            ),
            "automatedProcesses": [
                {
                    "code": "IMMEDIATE",
                    "queue": {"number": "0", "category": "0"},
                    "officeId": QUEUING_OFFICE_ID,
                }
            ],
        }
        for optional in ("remarks", "contacts"):
            if optional in data:
                order[optional] = copy.deepcopy(data[optional])
        self.orders[order_id] = order
        return {"data": order, "dictionaries": {"locations": dictionaries(offers)["locations"]}}


def _record_locator(counter: int) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    digest = hashlib.sha256(f"pnr-{counter}".encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:6])
