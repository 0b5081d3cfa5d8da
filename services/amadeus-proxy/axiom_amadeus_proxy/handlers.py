"""The proxy's NATS request/reply endpoints (`amadeus.search`, `amadeus.book`)."""

from __future__ import annotations

from axiom_amadeus_proxy.booking import Bookings
from axiom_amadeus_proxy.search import FlightSearch
from axiom_shared.nats import Endpoint
from axiom_shared.schemas.amadeus import FlightBookInput, FlightSearchInput
from axiom_shared.topology import AMADEUS_BOOK, AMADEUS_SEARCH

SERVICE_NAME = "amadeus-proxy"
SERVICE_VERSION = "1.0.0"


def endpoints(search: FlightSearch, bookings: Bookings) -> list[Endpoint]:
    # The input is parsed (and so validated with Amadeus's rules) by `serve` before the
    # handler runs: an invalid request is a 422 and never reaches Amadeus.
    return [
        Endpoint("search", AMADEUS_SEARCH, FlightSearchInput, search.search),
        Endpoint("book", AMADEUS_BOOK, FlightBookInput, bookings.book),
    ]
