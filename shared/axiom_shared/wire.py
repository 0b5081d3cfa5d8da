"""The wire contract, written once: identifiers and their patterns, the HTTP header names the
services and their clients share, the status stream's path and event format, the dead-letter
headers, and the one text form of a stored time.

Every producer and every reader imports these names: the gateway and the notifier agree on the
stream because they read the same constants, not because two copies happen to match.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

# --- identifiers -----------------------------------------------------------------------------

#: A payment's public id (`pay_` + 24 url-safe characters when we make it; any such text is
#: looked up, none is echoed back).
PAYMENT_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
#: A catalogue entry.
ORDER_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: A user id, as the trusted auth layer names it.
USER_ID_PATTERN: Final = r"^[A-Za-z0-9_.:@|-]{1,128}$"

#: A refund request (`rf_` and 24 random URL-safe characters when we make one).
REFUND_ID_PATTERN: Final = r"^rf_[A-Za-z0-9_-]{16,64}$"
_PAYMENT_ID = re.compile(PAYMENT_ID_PATTERN)
_REFUND_ID = re.compile(REFUND_ID_PATTERN)
_ORDER_ID = re.compile(ORDER_ID_PATTERN)


def is_payment_id(text: str) -> bool:
    return _PAYMENT_ID.match(text) is not None


def is_refund_id(text: str) -> bool:
    return _REFUND_ID.match(text) is not None


def is_order_id(text: str) -> bool:
    return _ORDER_ID.match(text) is not None


# --- HTTP headers ----------------------------------------------------------------------------

IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
#: On an answer that repeats the first answer for the same Idempotency-Key.
IDEMPOTENT_REPLAYED_HEADER: Final = "Idempotent-Replayed"
LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
#: Set by the gateway on a proxied status stream: the client it counts against (the notifier
#: believes it from trusted peers only).
STREAM_CLIENT_HEADER: Final = "X-Axiom-Client"

# --- the payment status stream (Server-Sent Events) -----------------------------------------

#: Served by the notifier, passed through by the gateway under the same path.
STATUS_STREAM_PATH: Final = "/api/sse/payment-status/{payment_id}"
#: The Solana Pay transaction request of an order; `?payment=<payment_id>` asks for the
#: transaction of that existing payment instead of creating one.
TRANSACTION_REQUEST_PATH: Final = "/api/pay/req/{order_id}"
TRANSACTION_REQUEST_PAYMENT_PARAM: Final = "payment"
#: `event: status`, `id: <the payment's version>`, `data: <the check-status JSON>`.
STATUS_EVENT: Final = "status"
_MAX_EVENT_ID_DIGITS = 18


def parse_last_event_id(raw: str | None) -> int | None:
    """The version a reconnecting client already has; anything unreadable counts as none (the
    client then gets the current status again rather than nothing)."""
    text = (raw or "").strip()
    if not text.isdigit() or len(text) > _MAX_EVENT_ID_DIGITS:
        return None
    return int(text)


# --- dead letters ----------------------------------------------------------------------------

DEAD_LETTER_REASON_HEADER: Final = "Axiom-Dead-Letter-Reason"
ORIGINAL_SUBJECT_HEADER: Final = "Axiom-Original-Subject"
ORIGINAL_STREAM_HEADER: Final = "Axiom-Original-Stream"
ORIGINAL_SEQUENCE_HEADER: Final = "Axiom-Original-Sequence"
DELIVERIES_HEADER: Final = "Axiom-Deliveries"

# --- time ------------------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    """The one text form of every stored time: UTC, fixed width, microseconds, so that SQL
    compares them in time order (`2026-12-01T10:00:00.000000+00:00`). A naive time is UTC."""
    if moment.tzinfo is UTC:
        return moment.isoformat(timespec="microseconds")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now_stamp() -> str:
    return stamp(datetime.now(UTC))
