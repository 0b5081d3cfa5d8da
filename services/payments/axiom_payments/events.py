"""How the payments service tells the rest of the system about a payment.

Status events go through the outbox (`outbox.py`): written in the same DB transaction as the
change, then published to JetStream with a `Nats-Msg-Id` of payment and version, so a change
is announced exactly once even when the service dies between the write and the publish.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from axiom_shared.logging import bind_correlation_id
from axiom_shared.nats import publish_encoded
from axiom_shared.schemas import PaymentProvisioned, PaymentStatusChanged
from axiom_shared.topology import (
    PAYMENT_PROVISIONED_SUBJECT,
    PAYMENT_STATUS_BUCKET,
    PAYMENT_STATUS_SUBJECT,
)


@dataclass(frozen=True)
class OutgoingEvent:
    """An event as it goes out: already serialised (the outbox row's payload), with what the
    relay needs to know of it, so publishing never parses or validates it again."""

    subject: str
    msg_id: str
    #: The message's `schema` (`name/N`).
    schema: str
    payload: bytes
    #: For a status change: (payment id, version), what the status bucket keeps.
    status_of: tuple[str, int] | None = None
    #: The change's correlation id, bound while it is published (None: the caller's stays).
    correlation_id: str | None = None

    @classmethod
    def from_outbox(
        cls, subject: str, msg_id: str, payload: bytes, correlation_id: str | None
    ) -> OutgoingEvent:
        """Rebuild one from an outbox row: the payload was validated and serialised by this
        service when the row was written, so a plain JSON read of its header fields is enough."""
        body = json.loads(payload)
        schema = str(body["schema"])
        status_of = None
        if schema == PaymentStatusChanged.SCHEMA:
            payment = body["payment"]
            status_of = (str(payment["payment_id"]), int(payment["version"]))
        return cls(subject, msg_id, schema, payload, status_of, correlation_id)


def status_event(event: PaymentStatusChanged) -> OutgoingEvent:
    payment = event.payment
    return OutgoingEvent(
        subject=PAYMENT_STATUS_SUBJECT.format(payment_id=payment.payment_id),
        msg_id=f"status:{payment.payment_id}:{payment.version}",
        schema=event.schema_,
        payload=event.to_bytes(),
        status_of=(payment.payment_id, payment.version),
    )


def provisioned_event(event: PaymentProvisioned) -> OutgoingEvent:
    return OutgoingEvent(
        subject=PAYMENT_PROVISIONED_SUBJECT.format(payment_id=event.payment_id),
        msg_id=f"provisioned:{event.payment_id}",
        schema=event.schema_,
        payload=event.to_bytes(),
    )


async def deliver(
    js: JetStreamContext,
    *events: OutgoingEvent,
    status_kv: KeyValue | None = None,
    known: KnownRevisions | None = None,
    published: Callable[[OutgoingEvent], None] | None = None,
) -> None:
    """Publish durably, in the order given (one subject's events: one payment's changes); a
    retry of the same msg id is dropped by JetStream. `published` is told of each event once
    JetStream has stored it (the relay then deletes its outbox row), and a failure stops there:
    a later event never goes out before an earlier one.

    Status changes are also recorded as the payment's latest status, in the status bucket
    (`status_kv`, looked up when not given; a caller delivering many keeps its handle and its
    `known` revisions, which save the read before each write). The bucket first, once, with
    the newest of them, then the events: whoever has seen one of the events and then reads the
    bucket (check-status, a stream opened late) finds that version or a newer one, never an
    older one, and an intermediate version about to be replaced costs no write. A retry
    writes the bucket again, which keeps the newer version."""
    statuses = [(e.status_of, e.payload) for e in events if e.status_of is not None]
    if statuses:
        kv = status_kv or await js.key_value(PAYMENT_STATUS_BUCKET)
        (payment_id, version), payload = max(statuses, key=lambda status: status[0][1])
        await record_latest_status(kv, payment_id, version, payload, known or KnownRevisions(0))
    for event in events:
        if event.correlation_id is not None:
            bind_correlation_id(event.correlation_id)
        await publish_encoded(js, event.subject, event.schema, event.payload, msg_id=event.msg_id)
        if published is not None:
            published(event)


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
    payment_id: str,
    version: int,
    data: bytes,
    known: KnownRevisions | None = None,
) -> None:
    """Keep the newest version only: a late, older write never replaces a newer one.

    Every write names the revision it replaces (or none, for a first write), so two writers
    can never both win. The read before the write is skipped when it is known what is there:
    a payment's first version goes straight to `create`, a later one to `update` at the
    revision this process wrote last; if that guess is wrong the write is refused and the
    loop below reads and decides. The keys are payment ids this service minted (`pay_` and
    URL-safe base64), so nats-py's per-call key check (a regular expression) is skipped."""
    known = known if known is not None else KnownRevisions(0)
    hint = known.get(payment_id)
    try:
        if hint is None and version == 1:
            known.wrote(payment_id, 1, await kv.create(payment_id, data, validate_keys=False))
            return
        if hint is not None and hint[0] >= version:
            return  # this process wrote a newer or the same version; versions never go back
        if hint is not None:
            revision = await kv.update(payment_id, data, last=hint[1], validate_keys=False)
            known.wrote(payment_id, version, revision)
            return
    except KeyWrongLastSequenceError:
        known.forget(payment_id)
    for _ in range(5):
        try:
            current = await kv.get(payment_id, validate_keys=False)
        except KeyNotFoundError:
            current = None
        try:
            if current is None or not current.value:
                revision = await kv.create(payment_id, data, validate_keys=False)
            else:
                stored = PaymentStatusChanged.from_bytes(current.value).payment.version
                if stored >= version:
                    if current.revision is not None:
                        known.wrote(payment_id, stored, current.revision)
                    return
                revision = await kv.update(
                    payment_id, data, last=current.revision, validate_keys=False
                )
            known.wrote(payment_id, version, revision)
            return
        except KeyWrongLastSequenceError:
            continue  # someone wrote in between: read again and compare versions
    raise RuntimeError(f"latest status of {payment_id} kept changing; retry later")
