"""How the payments service tells the rest of the system about a payment.

Status events go through the outbox (`outbox.py`): written in the same DB transaction as the
change, then published to JetStream with a `Nats-Msg-Id` of payment and version, so a change
is announced exactly once even when the service dies between the write and the publish.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from axiom_shared.nats import publish_event
from axiom_shared.schemas import PaymentProvisioned, PaymentStatusChanged
from axiom_shared.schemas.base import Message
from axiom_shared.topology import (
    PAYMENT_PROVISIONED_SUBJECT,
    PAYMENT_STATUS_BUCKET,
    PAYMENT_STATUS_SUBJECT,
)


@dataclass(frozen=True)
class OutgoingEvent:
    subject: str
    msg_id: str
    event: Message


def status_event(event: PaymentStatusChanged) -> OutgoingEvent:
    payment = event.payment
    return OutgoingEvent(
        subject=PAYMENT_STATUS_SUBJECT.format(payment_id=payment.payment_id),
        msg_id=f"status:{payment.payment_id}:{payment.version}",
        event=event,
    )


def provisioned_event(event: PaymentProvisioned) -> OutgoingEvent:
    return OutgoingEvent(
        subject=PAYMENT_PROVISIONED_SUBJECT.format(payment_id=event.payment_id),
        msg_id=f"provisioned:{event.payment_id}",
        event=event,
    )


async def deliver(
    js: JetStreamContext, outgoing: OutgoingEvent, status_kv: KeyValue | None = None
) -> None:
    """Publish durably (a retry of the same msg id is dropped by JetStream); for a status
    change, also record it as the payment's latest status (in `status_kv`, the status bucket,
    looked up when not given: a caller delivering many keeps its handle)."""
    if not isinstance(outgoing.event, PaymentStatusChanged):
        await publish_event(js, outgoing.subject, outgoing.event, msg_id=outgoing.msg_id)
        return
    kv = status_kv or await js.key_value(PAYMENT_STATUS_BUCKET)
    # Side by side, not one after the other: both must succeed before the outbox row goes
    # (a retry publishes again under the same msg id, which JetStream drops).
    await asyncio.gather(
        publish_event(js, outgoing.subject, outgoing.event, msg_id=outgoing.msg_id),
        record_latest_status(kv, outgoing.event),
    )


async def record_latest_status(kv: KeyValue, event: PaymentStatusChanged) -> None:
    """Keep the newest version only: a late, older write never replaces a newer one."""
    payment = event.payment
    for _ in range(5):
        try:
            current = await kv.get(payment.payment_id)
        except KeyNotFoundError:
            current = None
        try:
            if current is None or not current.value:
                await kv.create(payment.payment_id, event.to_bytes())
                return
            if PaymentStatusChanged.from_bytes(current.value).payment.version >= payment.version:
                return
            await kv.update(payment.payment_id, event.to_bytes(), last=current.revision)
            return
        except KeyWrongLastSequenceError:
            continue  # someone wrote in between: read again and compare versions
    raise RuntimeError(f"latest status of {payment.payment_id} kept changing; retry later")
