"""Flight offers search: validated by `FlightSearchInput` before any upstream call (the NATS
endpoint parses it), then `GET /v2/shopping/flight-offers`, retried while safe (see client)."""

from __future__ import annotations

from axiom_amadeus_proxy.client import SEARCH_PATH, AmadeusClient, upstream_error
from axiom_shared.errors import ApiError
from axiom_shared.schemas.amadeus import FlightSearchInput, FlightSearchResult


class FlightSearch:
    def __init__(self, client: AmadeusClient) -> None:
        self._client = client

    async def search(self, query: FlightSearchInput) -> FlightSearchResult:
        response = await self._client.send_repeatable(
            "GET", SEARCH_PATH, params=query.query_params()
        )
        if response.status != 200:
            raise upstream_error(response)
        if not isinstance(response.body, dict) or not isinstance(response.body.get("data"), list):
            raise ApiError(502, "upstream_error", "the travel provider sent an unreadable answer")
        return FlightSearchResult(amadeus_response=response.body)
