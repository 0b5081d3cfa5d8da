"""Amadeus's error envelope: `{"errors": [{"status", "code", "title", "detail", "source"}]}`."""

from __future__ import annotations

from typing import Any

# Codes and titles as the Self-Service APIs send them.
INVALID_ACCESS_TOKEN = (38190, "Invalid access token")
TOO_MANY_REQUESTS = (38194, "Too many requests")
RESOURCE_NOT_FOUND = (38196, "Resource not found")
INVALID_FORMAT = (477, "INVALID FORMAT")
MANDATORY_DATA_MISSING = (32171, "MANDATORY DATA MISSING")
INVALID_DATE = (425, "INVALID DATE")
INVALID_DATA_RECEIVED = (4926, "INVALID DATA RECEIVED")
SYSTEM_ERROR = (141, "SYSTEM ERROR HAS OCCURRED")
NOT_FOUND = (1797, "NOT FOUND")
SEGMENT_SELL_FAILURE = (34651, "SEGMENT SELL FAILURE")
BOOKING_FAILED = (36870, "BOOKING FAILED")
PRICE_DISCREPANCY = (37200, "PRICE DISCREPANCY")

BOOKING_FAILURES: dict[int, tuple[tuple[int, str], str]] = {
    34651: (SEGMENT_SELL_FAILURE, "Could not sell segment 1"),
    36870: (BOOKING_FAILED, "The booking could not be completed by the airline"),
    37200: (PRICE_DISCREPANCY, "Current grandTotal price is different from request one"),
}


def error_item(
    status: int,
    code_title: tuple[int, str],
    detail: str | None = None,
    *,
    parameter: str | None = None,
    pointer: str | None = None,
    example: str | None = None,
) -> dict[str, Any]:
    code, title = code_title
    item: dict[str, Any] = {"status": status, "code": code, "title": title}
    if detail is not None:
        item["detail"] = detail
    source: dict[str, str] = {}
    if parameter is not None:
        source["parameter"] = parameter
    if pointer is not None:
        source["pointer"] = pointer
    if example is not None:
        source["example"] = example
    if source:
        item["source"] = source
    return item


class AmadeusError(Exception):
    """Raised by a handler or the middleware; rendered as Amadeus's error envelope."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors

    @classmethod
    def single(
        cls,
        status: int,
        code_title: tuple[int, str],
        detail: str | None = None,
        **source: str,
    ) -> AmadeusError:
        return cls(status, [error_item(status, code_title, detail, **source)])

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors}


class Problems:
    """Collects every validation error of one request, as Amadeus reports them all at once."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, code_title: tuple[int, str], detail: str, **source: str) -> None:
        self.errors.append(error_item(400, code_title, detail, **source))

    def raise_if_any(self) -> None:
        if self.errors:
            raise AmadeusError(400, self.errors)
