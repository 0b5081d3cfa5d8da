"""Flight booking, exactly once per idempotency key (Stripe's semantics), in `agent_transactions`.

The key is claimed before anything else: an INSERT with state `in_flight`, the fingerprint of
the request (SHA-256 of the canonical JSON of the booking body, user included) and a random
claim token; the UNIQUE index on `idempotency_key` lets one claim win. A second request with
the key then gets:
- the stored answer again, marked replayed, when the first completed (or failed at Amadeus:
  a refused booking is replayed as the same error) and the fingerprint matches;
- 422 when the fingerprint differs (the key was reused for another request);
- 409 while the first is still running.

Flow of the winner: price the offers (`POST /v1/shopping/flight-offers/pricing`, safe to repeat),
record `booking_sent`, then `POST /v1/booking/flight-orders` exactly once, and record
`completed` with the Amadeus order id (`external_booking_ref`) and the answer. Every write is
conditional on the claim token and the expected state, so a worker whose claim was taken over
can never overwrite the new owner's record.

Crash safety. The one dangerous moment is between Amadeus creating the order and our write of
it: a crash there leaves `booking_sent`. Amadeus's Self-Service API cannot look an order up by
anything but its id, which is exactly what was lost, so a retry never books again; instead:
- while the record is fresh, a retry gets 409 `booking_in_progress`;
- once it is older than `stale_after` (longer than any live booking can take), the next retry
  turns it into `outcome_unknown` and gets 409 `booking_outcome_unknown`, as does every later
  retry. Such bookings are for an operator to reconcile: each order carries the row id in its
  `remarks` (`AXIOMID BOOKING <row id>`), so the order can be found in the Amadeus office queue,
  and the log line of a failed final write names the order id.
A timeout or a 5xx on the order call is treated the same way (Amadeus may have booked), while
answers that prove nothing happened (refused connection, 401, 429, our own pacing refusal)
release the claim so that the client may retry with the same key. An `in_flight` claim (nothing
sent yet) that went stale is simply taken over.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from axiom_amadeus_proxy.client import (
    ORDERS_PATH,
    PRICING_PATH,
    AmadeusClient,
    AmadeusResponse,
    UpstreamNotSent,
    UpstreamUnanswered,
    error_details,
    upstream_error,
)
from axiom_shared.db import Database, IntegrityError
from axiom_shared.errors import ApiError, ErrorBody
from axiom_shared.idempotency import fingerprint
from axiom_shared.logging import get_logger
from axiom_shared.schemas.amadeus import FlightBookInput, FlightBookResult
from axiom_shared.schemas.base import utcnow
from axiom_shared.wire import IDEMPOTENT_REPLAYED_HEADER, stamp

log = get_logger(__name__)

AGENT_ID = "amadeus-proxy"
KIND = "flight_booking"


class BookingState(StrEnum):
    IN_FLIGHT = "in_flight"
    BOOKING_SENT = "booking_sent"
    COMPLETED = "completed"
    FAILED = "failed"
    OUTCOME_UNKNOWN = "outcome_unknown"


def request_fingerprint(booking: FlightBookInput) -> str:
    return fingerprint(booking.booking_body())


def booking_error(response: AmadeusResponse) -> ApiError:
    """Amadeus's booking refusals, as errors a client can act on."""
    codes = response.error_codes
    details = error_details(response)
    if 37200 in codes:
        return ApiError(
            409,
            "price_changed",
            "the offer's price has changed: search again for a current offer",
            details,
        )
    if 34651 in codes:
        return ApiError(
            409,
            "segment_sell_failure",
            "the airline could not sell a seat on this flight: choose another offer",
            details,
        )
    if 36870 in codes:
        return ApiError(
            502, "booking_failed", "the airline could not complete the booking", details
        )
    return upstream_error(response)


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "booking_in_progress",
        "a booking with this Idempotency-Key is in progress: retry later for its answer",
        headers={"Retry-After": "1"},
    )


def _outcome_unknown() -> ApiError:
    return ApiError(
        409,
        "booking_outcome_unknown",
        "the outcome of this booking is unknown and is being reconciled: "
        "do not book again with another Idempotency-Key",
    )


@dataclass(frozen=True)
class Claim:
    row_id: str
    token: str


class Bookings:
    def __init__(
        self,
        db: Database,
        client: AmadeusClient,
        *,
        stale_after: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._client = client
        self._stale_after = timedelta(seconds=stale_after)
        self._clock = clock

    async def book(self, booking: FlightBookInput) -> FlightBookResult:
        fingerprint = request_fingerprint(booking)
        claim = await self._claim(booking, fingerprint)
        if isinstance(claim, FlightBookResult):
            return claim
        offers = await self._price(booking, claim)
        await self._transition(
            claim, BookingState.BOOKING_SENT, from_states=(BookingState.IN_FLIGHT,)
        )
        return await self._order(booking, claim, offers)

    # --- the claim ---------------------------------------------------------------------------

    async def _claim(self, booking: FlightBookInput, fingerprint: str) -> Claim | FlightBookResult:
        key = booking.idempotency_key
        for _ in range(3):
            claim = Claim(f"bk_{uuid.uuid4().hex}", secrets.token_hex(16))
            try:
                await self._db.execute(
                    "INSERT INTO agent_transactions (id, agent_id, user_id, kind, status,"
                    " idempotency_key, request_hash, booking_state, claim_token, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        claim.row_id,
                        AGENT_ID,
                        booking.user_id,
                        KIND,
                        BookingState.IN_FLIGHT.value,
                        key,
                        fingerprint,
                        BookingState.IN_FLIGHT.value,
                        claim.token,
                        stamp(self._clock()),
                    ],
                )
                return claim
            except IntegrityError:
                row = await self._db.fetch_one(
                    "SELECT id, request_hash, booking_state, claim_token, updated_at,"
                    " external_booking_ref, response_status, response_body"
                    " FROM agent_transactions WHERE idempotency_key = ?",
                    [key],
                )
            if row is None:
                continue  # released between our INSERT and SELECT: claim again
            return await self._existing(key, fingerprint, row)
        raise _in_progress()

    async def _existing(
        self, key: str, fingerprint: str, row: dict[str, Any]
    ) -> Claim | FlightBookResult:
        if row["request_hash"] != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            )
        state = row["booking_state"]
        stale = str(row["updated_at"] or "") < stamp(self._clock() - self._stale_after)
        if state == BookingState.COMPLETED:
            return FlightBookResult(
                idempotency_key=key,
                order_id=str(row["external_booking_ref"]),
                replayed=True,
                amadeus_response=json.loads(row["response_body"]),
            )
        if state == BookingState.FAILED:
            try:
                body = ErrorBody.model_validate_json(row["response_body"])
            except ValidationError:
                raise ApiError(502, "booking_failed", "the booking failed") from None
            error = ApiError.from_body(int(row["response_status"]), body)
            error.headers[IDEMPOTENT_REPLAYED_HEADER] = "true"
            raise error
        if state == BookingState.IN_FLIGHT and stale:
            # Its worker died before sending the order: nothing was booked, take it over.
            claim = Claim(str(row["id"]), secrets.token_hex(16))
            taken = await self._db.execute(
                "UPDATE agent_transactions SET claim_token = ?, updated_at = ?"
                " WHERE id = ? AND booking_state = ? AND claim_token = ?",
                [
                    claim.token,
                    stamp(self._clock()),
                    claim.row_id,
                    BookingState.IN_FLIGHT.value,
                    row["claim_token"],
                ],
            )
            if taken.rows_affected == 1:
                log.warning("stale booking claim taken over", booking=claim.row_id)
                return claim
            raise _in_progress()
        if state == BookingState.BOOKING_SENT and stale:
            # Its worker died after sending the order: Amadeus may have booked it.
            await self._db.execute(
                "UPDATE agent_transactions SET booking_state = ?, status = ?, updated_at = ?"
                " WHERE id = ? AND booking_state = ? AND claim_token = ?",
                [
                    BookingState.OUTCOME_UNKNOWN.value,
                    BookingState.OUTCOME_UNKNOWN.value,
                    stamp(self._clock()),
                    row["id"],
                    BookingState.BOOKING_SENT.value,
                    row["claim_token"],
                ],
            )
            log.error("booking outcome unknown, needs reconciliation", booking=row["id"])
            raise _outcome_unknown()
        if state == BookingState.OUTCOME_UNKNOWN:
            raise _outcome_unknown()
        raise _in_progress()

    # --- the upstream steps ------------------------------------------------------------------

    async def _price(self, booking: FlightBookInput, claim: Claim) -> list[dict[str, Any]]:
        """Reprice the offers (Amadeus wants a priced offer in the order); nothing is booked
        yet, so a transient failure releases the claim for a retry with the same key."""
        body = {"data": {"type": "flight-offers-pricing", "flightOffers": booking.flightOffers}}
        try:
            response = await self._client.send_repeatable("POST", PRICING_PATH, body=body)
        except ApiError:
            await self._release(claim, BookingState.IN_FLIGHT)
            raise
        data = response.body.get("data") if isinstance(response.body, dict) else None
        offers = data.get("flightOffers") if isinstance(data, dict) else None
        if response.status == 200 and isinstance(offers, list) and offers:
            return offers
        if response.status == 429 or response.status >= 500 or response.status in (401, 403):
            await self._release(claim, BookingState.IN_FLIGHT)
            raise upstream_error(response)
        error = booking_error(response)
        await self._fail(claim, error)
        raise error

    async def _order(
        self, booking: FlightBookInput, claim: Claim, offers: list[dict[str, Any]]
    ) -> FlightBookResult:
        body = {
            "data": {
                "type": "flight-order",
                "flightOffers": offers,
                "travelers": [
                    t.model_dump(mode="json", exclude_none=True) for t in booking.travelers
                ],
                # Our reference on the order, for reconciliation when our answer was lost.
                "remarks": {
                    "general": [
                        {
                            "subType": "GENERAL_MISCELLANEOUS",
                            "text": f"AXIOMID BOOKING {claim.row_id.upper()}",
                        }
                    ]
                },
            }
        }
        try:
            response = await self._client.send("POST", ORDERS_PATH, body=body)
        except UpstreamNotSent as exc:
            await self._release(claim, BookingState.BOOKING_SENT)
            raise exc.error from None
        except UpstreamUnanswered:
            await self._unknown(claim)
            raise _outcome_unknown() from None
        data = response.body.get("data") if isinstance(response.body, dict) else None
        order_id = data.get("id") if isinstance(data, dict) else None
        if response.status in (200, 201) and isinstance(order_id, str) and order_id:
            return await self._complete(booking, claim, order_id, response, offers)
        if response.status in (401, 403, 429):
            # Refused before Amadeus did anything: the same key may be used again.
            await self._release(claim, BookingState.BOOKING_SENT)
            raise upstream_error(response)
        if response.status >= 500 or response.status < 400:
            await self._unknown(claim)
            raise _outcome_unknown()
        error = booking_error(response)
        await self._fail(claim, error)
        raise error

    # --- recording ---------------------------------------------------------------------------

    async def _complete(
        self,
        booking: FlightBookInput,
        claim: Claim,
        order_id: str,
        response: AmadeusResponse,
        offers: list[dict[str, Any]],
    ) -> FlightBookResult:
        amount_cents, currency = _total(offers)
        try:
            await self._db.execute(
                "UPDATE agent_transactions SET booking_state = ?, status = ?,"
                " external_booking_ref = ?, response_status = ?, response_body = ?,"
                " amount_cents = ?, currency = ?, updated_at = ?"
                " WHERE id = ? AND claim_token = ? AND booking_state IN (?, ?)",
                [
                    BookingState.COMPLETED.value,
                    BookingState.COMPLETED.value,
                    order_id,
                    response.status,
                    json.dumps(response.body, separators=(",", ":")),
                    amount_cents,
                    currency,
                    stamp(self._clock()),
                    claim.row_id,
                    claim.token,
                    BookingState.BOOKING_SENT.value,
                    BookingState.OUTCOME_UNKNOWN.value,
                ],
            )
        except Exception:
            # The order exists at Amadeus: this line is what reconciles it.
            log.error("booking made but not recorded", booking=claim.row_id, order_id=order_id)
            raise
        log.info("flight booked", booking=claim.row_id, order_id=order_id)
        return FlightBookResult(
            idempotency_key=booking.idempotency_key,
            order_id=order_id,
            amadeus_response=response.body,
        )

    async def _fail(self, claim: Claim, error: ApiError) -> None:
        """A definitive refusal: stored, and replayed to a retry with the same key."""
        await self._db.execute(
            "UPDATE agent_transactions SET booking_state = ?, status = ?, response_status = ?,"
            " response_body = ?, updated_at = ?"
            " WHERE id = ? AND claim_token = ? AND booking_state IN (?, ?)",
            [
                BookingState.FAILED.value,
                BookingState.FAILED.value,
                error.status,
                error.body().model_dump_json(),
                stamp(self._clock()),
                claim.row_id,
                claim.token,
                BookingState.IN_FLIGHT.value,
                BookingState.BOOKING_SENT.value,
            ],
        )
        log.info("flight booking refused", booking=claim.row_id, code=error.code)

    async def _unknown(self, claim: Claim) -> None:
        await self._db.execute(
            "UPDATE agent_transactions SET booking_state = ?, status = ?, updated_at = ?"
            " WHERE id = ? AND claim_token = ? AND booking_state = ?",
            [
                BookingState.OUTCOME_UNKNOWN.value,
                BookingState.OUTCOME_UNKNOWN.value,
                stamp(self._clock()),
                claim.row_id,
                claim.token,
                BookingState.BOOKING_SENT.value,
            ],
        )
        log.error("booking outcome unknown, needs reconciliation", booking=claim.row_id)

    async def _release(self, claim: Claim, state: BookingState) -> None:
        """Nothing was booked: forget the claim so that the same key can be used again."""
        await self._db.execute(
            "DELETE FROM agent_transactions WHERE id = ? AND claim_token = ? AND booking_state = ?",
            [claim.row_id, claim.token, state.value],
        )

    async def _transition(
        self, claim: Claim, to: BookingState, *, from_states: tuple[BookingState, ...]
    ) -> None:
        marks = ", ".join("?" for _ in from_states)
        result = await self._db.execute(
            "UPDATE agent_transactions SET booking_state = ?, status = ?, updated_at = ?"  # noqa: S608 - placeholders only
            f" WHERE id = ? AND claim_token = ? AND booking_state IN ({marks})",
            [
                to.value,
                to.value,
                stamp(self._clock()),
                claim.row_id,
                claim.token,
                *(s.value for s in from_states),
            ],
        )
        if result.rows_affected != 1:
            # Our claim went stale and another worker took it over: it decides now.
            raise _in_progress()


def _total(offers: list[dict[str, Any]]) -> tuple[int | None, str | None]:
    """The priced total in cents and its currency, for the legacy columns (best effort)."""
    try:
        cents = sum(Decimal(str(o["price"]["grandTotal"])) for o in offers) * 100
        currency = str(offers[0]["price"].get("currency") or "") or None
        return int(cents), currency
    except (KeyError, TypeError, InvalidOperation, IndexError):
        return None, None
