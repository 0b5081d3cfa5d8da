"""Applying legacy Paymob callbacks to the bookings they pay (this service owns the table).

The gateway stores each authentic callback in JetStream (`webhooks.paymob.<transaction id>`);
a durable consumer here records it in `paymob_callbacks` and applies it to the booking whose
`paymob_order_id` is the callback's order, in one transaction:
- `success` marks the booking `payment_status = 'paid'`, `payment_provider = 'paymob'`;
- `refunded` / `voided` move a paid booking to `refunded` / `voided`;
- `declined` / `pending` are recorded only.
Every change is one conditional UPDATE (`... AND payment_status IS NULL` / `= 'paid'`), and the
record is unique per (transaction, state), so a redelivered callback changes nothing. A callback
for an order we never issued, or for another amount than the booking's, is recorded with a flag
and not applied (the known mistake of public integrations is to trust the order id blindly).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from aiohttp import web
from nats.aio.msg import Msg

from axiom_shared.db import Database, Statement
from axiom_shared.logging import get_logger
from axiom_shared.nats import JetStreamConsumer
from axiom_shared.schemas.base import utcnow
from axiom_shared.schemas.paymob import PaymobTransactionReceived, PaymobTransactionState
from axiom_shared.service import CleanupContext, bus_key, lifecycle, settings_key
from axiom_shared.topology import AMADEUS_PAYMOB_CALLBACKS
from axiom_shared.wire import stamp

log = get_logger(__name__)

UNKNOWN_ORDER = "unknown_order"
AMOUNT_MISMATCH = "amount_mismatch"


# What each state does to the booking: (new payment_status, condition on the current one).
_PAID = (
    "UPDATE agent_transactions SET payment_status = 'paid', payment_provider = 'paymob',"
    " paymob_transaction_id = ?, payment_updated_at = ?"
    " WHERE id = ? AND payment_status IS NULL"
    # Redelivery can reorder facts: a refund or void already recorded for this order wins.
    " AND NOT EXISTS (SELECT 1 FROM paymob_callbacks"
    " WHERE order_id = ? AND state IN ('refunded', 'voided'))"
)
_REVERSED = (
    "UPDATE agent_transactions SET payment_status = ?, payment_updated_at = ?"
    " WHERE id = ? AND payment_status = 'paid' AND payment_provider = 'paymob'"
)


class PaymobCallbacks:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock

    async def apply(self, event: PaymobTransactionReceived, _msg: Msg | None = None) -> None:
        booking = await self._db.fetch_one(
            "SELECT id, amount_cents, currency FROM agent_transactions WHERE paymob_order_id = ?",
            [event.order_id],
        )
        flag = _flag(event, booking)
        now = stamp(self._clock())
        change = None if flag or booking is None else _change(event, str(booking["id"]), now)
        statements: list[Statement] = [change] if change else []
        statements.append(
            (
                "INSERT INTO paymob_callbacks (transaction_id, order_id, state, amount_cents,"
                " currency, booking_id, flag, applied, via, raw, received_at, recorded_at)"
                # `changes()`: the row count of the UPDATE just before, in this transaction.
                " VALUES (?, ?, ?, ?, ?, ?, ?, CASE WHEN ? THEN changes() ELSE 0 END,"
                " ?, ?, ?, ?) ON CONFLICT (transaction_id, state) DO NOTHING",
                [
                    event.transaction_id,
                    event.order_id,
                    event.state.value,
                    event.amount_cents,
                    event.currency,
                    booking["id"] if booking else None,
                    flag,
                    1 if change else 0,
                    event.via,
                    json.dumps(event.obj, separators=(",", ":"), sort_keys=True),
                    stamp(event.received_at),
                    now,
                ],
            )
        )
        results = await self._db.batch(statements)
        changed = bool(change) and results[0].rows_affected == 1
        recorded = results[-1].rows_affected == 1
        log_fn = log.warning if flag else log.info
        log_fn(
            "paymob callback",
            transaction_id=event.transaction_id,
            order_id=event.order_id,
            state=event.state.value,
            booking=booking["id"] if booking else None,
            flag=flag,
            applied=changed,
            redelivered=not recorded,
        )


def _flag(event: PaymobTransactionReceived, booking: dict[str, Any] | None) -> str | None:
    if booking is None:
        return UNKNOWN_ORDER
    if event.state is not PaymobTransactionState.SUCCESS:
        return None
    amount, currency = booking["amount_cents"], booking["currency"]
    # Compared only when the booking knows both: legacy rows may lack them.
    if (
        amount is not None
        and currency
        and (int(amount) != event.amount_cents or str(currency).upper() != event.currency.upper())
    ):
        return AMOUNT_MISMATCH
    return None


def _change(event: PaymobTransactionReceived, booking_id: str, now: str) -> Statement | None:
    state = event.state
    if state is PaymobTransactionState.SUCCESS:
        return (_PAID, [event.transaction_id, now, booking_id, event.order_id])
    if state in (PaymobTransactionState.REFUNDED, PaymobTransactionState.VOIDED):
        return (_REVERSED, [state.value, now, booking_id])
    return None  # declined, pending: recorded only


def paymob_consumer_context(db_key: web.AppKey[Database]) -> CleanupContext:
    """A cleanup context running the durable Paymob consumer on the bookings DB in `db_key`
    (after the NATS and DB contexts); on shutdown it finishes the messages in hand."""

    async def paymob_consumer(app: web.Application, stack: AsyncExitStack) -> None:
        bus = app[bus_key]
        callbacks = PaymobCallbacks(app[db_key])
        consumer = JetStreamConsumer(
            bus.nc, bus.js, AMADEUS_PAYMOB_CALLBACKS, PaymobTransactionReceived, callbacks.apply
        )
        consumer.start()
        stack.push_async_callback(consumer.stop, app[settings_key].shutdown_timeout)

    return lifecycle(paymob_consumer)
