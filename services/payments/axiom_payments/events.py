"""How the payments service tells the rest of the system about a payment."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from axiom_shared.nats import publish_event
from axiom_shared.schemas import PaymentProvisioned, PaymentStatusChanged
from axiom_shared.topology import (
    PAYMENT_PROVISIONED_SUBJECT,
    PAYMENT_STATUS_BUCKET,
    PAYMENT_STATUS_SUBJECT,
)


async def publish_status_changed(js: JetStreamContext, event: PaymentStatusChanged) -> None:
    """Publish a status change, then record it as the payment's latest status.

    The message id is the payment and its version: a retried publish of the same change is
    dropped by JetStream, so subscribers see each change once. The KV write keeps the newest
    version only (a late, older write never replaces a newer one).
    """
    payment = event.payment
    await publish_event(
        js,
        PAYMENT_STATUS_SUBJECT.format(payment_id=payment.payment_id),
        event,
        msg_id=f"status:{payment.payment_id}:{payment.version}",
    )
    kv = await js.key_value(PAYMENT_STATUS_BUCKET)
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


async def publish_provisioned(js: JetStreamContext, event: PaymentProvisioned) -> None:
    await publish_event(
        js,
        PAYMENT_PROVISIONED_SUBJECT.format(payment_id=event.payment_id),
        event,
        msg_id=f"provisioned:{event.payment_id}",
    )
