"""How the payments service tells the rest of the system about a payment.

Status events go through the outbox (`outbox.py`): written in the same DB transaction as the
change, then published to JetStream with a `Nats-Msg-Id` of payment and version, so a change
is announced exactly once even when the service dies between the write and the publish.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from axiom_shared.nats import publish_encoded
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
    #: The event as serialised when it was written (the outbox row's payload), if known.
    encoded: bytes | None = None

    @property
    def payload(self) -> bytes:
        return self.encoded if self.encoded is not None else self.event.to_bytes()


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
    js: JetStreamContext,
    outgoing: OutgoingEvent,
    status_kv: KeyValue | None = None,
    known: KnownRevisions | None = None,
) -> None:
    """Publish durably (a retry of the same msg id is dropped by JetStream); for a status
    change, also record it as the payment's latest status (in `status_kv`, the status bucket,
    looked up when not given: a caller delivering many keeps its handle, and its `known`
    revisions, which save the read before each write)."""
    payload = outgoing.payload
    if isinstance(outgoing.event, PaymentStatusChanged):
        kv = status_kv or await js.key_value(PAYMENT_STATUS_BUCKET)
        # The bucket first, then the event: whoever has seen the event and then reads the bucket
        # (check-status, a stream opened late) finds this version or a newer one, never an
        # older one. Both must succeed before the outbox row goes (a retry writes the bucket
        # again, which keeps the newer version, and publishes under the same msg id, which
        # JetStream drops).
        await record_latest_status(kv, outgoing.event, payload, known or KnownRevisions(0))
    await publish_encoded(
        js, outgoing.subject, outgoing.event.schema_, payload, msg_id=outgoing.msg_id
    )


class KnownRevisions:
    """What this process last wrote to the status bucket: payment id → (version, revision),
    the newest `capacity` payments. A hint only: a write based on it names the revision it
    expects, so a stale hint (another replica wrote since) costs one refused write, never a
    lost or older status."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def get(self, payment_id: str) -> tuple[int, int] | None:
        return self._entries.get(payment_id)

    def wrote(self, payment_id: str, version: int, revision: int) -> None:
        if self.capacity <= 0:
            return
        self._entries[payment_id] = (version, revision)
        self._entries.move_to_end(payment_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, payment_id: str) -> None:
        self._entries.pop(payment_id, None)


async def record_latest_status(
    kv: KeyValue,
    event: PaymentStatusChanged,
    payload: bytes | None = None,
    known: KnownRevisions | None = None,
) -> None:
    """Keep the newest version only: a late, older write never replaces a newer one.

    Every write names the revision it replaces (or none, for a first write), so two writers
    can never both win. The read before the write is skipped when it is known what is there:
    a payment's first version goes straight to `create`, a later one to `update` at the
    revision this process wrote last; if that guess is wrong the write is refused and the
    loop below reads and decides."""
    payment = event.payment
    data = payload if payload is not None else event.to_bytes()
    known = known if known is not None else KnownRevisions(0)
    hint = known.get(payment.payment_id)
    try:
        if hint is None and payment.version == 1:
            known.wrote(payment.payment_id, 1, await kv.create(payment.payment_id, data))
            return
        if hint is not None and hint[0] >= payment.version:
            return  # this process wrote a newer or the same version; versions never go back
        if hint is not None:
            revision = await kv.update(payment.payment_id, data, last=hint[1])
            known.wrote(payment.payment_id, payment.version, revision)
            return
    except KeyWrongLastSequenceError:
        known.forget(payment.payment_id)
    for _ in range(5):
        try:
            current = await kv.get(payment.payment_id)
        except KeyNotFoundError:
            current = None
        try:
            if current is None or not current.value:
                revision = await kv.create(payment.payment_id, data)
            else:
                stored = PaymentStatusChanged.from_bytes(current.value).payment.version
                if stored >= payment.version:
                    if current.revision is not None:
                        known.wrote(payment.payment_id, stored, current.revision)
                    return
                revision = await kv.update(payment.payment_id, data, last=current.revision)
            known.wrote(payment.payment_id, payment.version, revision)
            return
        except KeyWrongLastSequenceError:
            continue  # someone wrote in between: read again and compare versions
    raise RuntimeError(f"latest status of {payment.payment_id} kept changing; retry later")
