"""One service's code publishes over real JetStream, another's consumes; poison goes to the
dead-letter subject and the consumer keeps going."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from axiom_notifier.app import create_app as create_notifier
from axiom_notifier.app import hub_key
from axiom_notifier.hub import Watcher
from axiom_notifier.settings import NotifierSettings
from axiom_payments.events import KnownRevisions, OutgoingEvent, deliver
from axiom_payments.events import status_event as outgoing_status
from axiom_shared.logging import (
    CORRELATION_HEADER,
    bind_correlation_id,
    current_correlation_id,
    unbind_correlation_id,
)
from axiom_shared.metrics import DEAD_LETTERS
from axiom_shared.nats import connect_nats
from axiom_shared.schemas import ChangeSource, PaymentStatus, PaymentStatusChanged, PaymentView
from axiom_shared.topology import (
    NOTIFIER_STATUS_FEED,
    PAYMENT_STATUS_BUCKET,
    PAYMENT_STATUS_STREAM,
    PAYMENT_STATUS_SUBJECT,
    ensure_topology,
)
from sandbox.infra import NatsServer
from tests.fixtures.infra import start_app, wait_for

pytestmark = pytest.mark.connected

PUBKEY = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"
SIG = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"


def status_event(payment_id: str, status: PaymentStatus, version: int) -> PaymentStatusChanged:
    now = datetime.now(UTC)
    view = PaymentView(
        payment_id=payment_id,
        status=status,
        order_id="pro-monthly",
        amount_lamports=10_000_000,
        recipient=PUBKEY,
        reference=PUBKEY,
        tx_signature=None if status == PaymentStatus.PENDING else SIG,
        expires_at=now + timedelta(minutes=15),
        created_at=now,
        updated_at=now,
        version=version,
    )
    return PaymentStatusChanged(payment=view, previous_status=None, source=ChangeSource.WEBHOOK)


async def test_status_change_reaches_notifier_and_poison_is_dead_lettered(
    nats_server: NatsServer, nats_client: NATS
) -> None:
    settings = NotifierSettings.load(**nats_server.login("notifier"), port=0)
    notifier = await start_app(create_notifier(settings))
    try:
        hub = notifier[hub_key]
        payment_id = f"pay_{uuid.uuid4().hex}"
        watcher = hub.watch(payment_id)
        js = nats_client.jetstream()
        dlq = await js.subscribe(NOTIFIER_STATUS_FEED.dead_letter_subject())
        await wait_for(lambda: notifier.app[hub_key] is hub and _consumer_exists(js, settings))
        dead_before = DEAD_LETTERS.labels(consumer=NOTIFIER_STATUS_FEED.durable)._value.get()

        await deliver(js, outgoing_status(status_event(payment_id, PaymentStatus.PENDING, 1)))
        first = await _next(watcher)
        assert first.payment.status == PaymentStatus.PENDING

        # A malformed message on the same subject, then a good one behind it.
        subject = f"payments.events.status.{payment_id}"
        await js.publish(subject, b'{"schema": "payments.status_changed/1", "payment": {}}')
        await js.publish(subject, b"not even json")
        await deliver(js, outgoing_status(status_event(payment_id, PaymentStatus.VERIFIED, 2)))

        second = await _next(watcher)
        assert second.payment.status == PaymentStatus.VERIFIED
        assert second.payment.version == 2

        letters = [await dlq.next_msg(timeout=5), await dlq.next_msg(timeout=5)]
        reasons = [m.headers["Axiom-Dead-Letter-Reason"] for m in letters if m.headers]
        assert all(r.startswith("malformed message") for r in reasons)
        assert len(reasons) == 2
        assert letters[1].data == b"not even json"
        assert letters[0].headers is not None
        assert letters[0].headers["Axiom-Original-Subject"] == subject
        after = DEAD_LETTERS.labels(consumer=NOTIFIER_STATUS_FEED.durable)._value.get()
        assert after - dead_before == 2

        # The latest status is kept for clients that connect late.
        kv = await js.key_value(PAYMENT_STATUS_BUCKET)
        latest = PaymentStatusChanged.from_bytes((await kv.get(payment_id)).value or b"")
        assert latest.payment.version == 2
        # An older change published late never replaces a newer latest status.
        await deliver(js, outgoing_status(status_event(payment_id, PaymentStatus.PENDING, 1)))
        latest = PaymentStatusChanged.from_bytes((await kv.get(payment_id)).value or b"")
        assert latest.payment.status == PaymentStatus.VERIFIED
    finally:
        await notifier.server.close()


async def test_a_republished_change_is_delivered_once(
    nats_server: NatsServer, nats_client: NATS
) -> None:
    settings = NotifierSettings.load(**nats_server.login("notifier"), port=0)
    notifier = await start_app(create_notifier(settings))
    try:
        hub = notifier[hub_key]
        payment_id = f"pay_{uuid.uuid4().hex}"
        watcher = hub.watch(payment_id)
        js = nats_client.jetstream()
        await wait_for(lambda: _consumer_exists(js, settings))
        event = status_event(payment_id, PaymentStatus.PENDING, 1)
        for _ in range(3):  # a publisher retrying after a lost ack
            await deliver(js, outgoing_status(event))
        await deliver(js, outgoing_status(status_event(payment_id, PaymentStatus.VERIFIED, 2)))
        got = [await _next(watcher), await _next(watcher)]
        assert [e.payment.version for e in got] == [1, 2]
        assert watcher.empty()
    finally:
        await notifier.server.close()


async def _consumer_exists(js: object, settings: NotifierSettings) -> bool:
    from nats.js import JetStreamContext

    assert isinstance(js, JetStreamContext)
    try:
        await js.consumer_info(
            NOTIFIER_STATUS_FEED.stream, NOTIFIER_STATUS_FEED.consumer_name(settings.replica_id)
        )
    except Exception:
        return False
    return True


async def _next(watcher: Watcher) -> PaymentStatusChanged:
    item = await asyncio.wait_for(watcher.next(), 5)
    assert item is not None, "the watcher was closed"
    return item


async def test_two_writers_of_the_latest_status_never_go_back(
    nats_client: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two payments replicas, each with its own remembered revisions, deliver one payment's
    changes out of order. The bucket always ends at the newest version; a stale memory costs
    a refused write and a read, never an older status; a fresh one saves the read."""
    js = nats_client.jetstream()
    await ensure_topology(nats_client, js)
    kv = await js.key_value(PAYMENT_STATUS_BUCKET)
    reads = 0
    real_get = kv.get

    async def counted_get(key: str, *args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await real_get(key)

    monkeypatch.setattr(kv, "get", counted_get)  # counts the reads; still the real bucket
    a, b = KnownRevisions(), KnownRevisions()
    payment_id = f"pay_{uuid.uuid4().hex}"

    async def latest() -> int:
        entry = await real_get(payment_id)
        return PaymentStatusChanged.from_bytes(entry.value or b"").payment.version

    def change(version: int) -> PaymentStatusChanged:
        status = PaymentStatus.PENDING if version == 1 else PaymentStatus.VERIFIED
        return status_event(payment_id, status, version)

    async def put(version: int, known: KnownRevisions) -> None:
        await deliver(js, outgoing_status(change(version)), status_kv=kv, known=known)

    await put(1, a)  # first version: created, no read
    assert (await latest(), reads) == (1, 0)
    await put(2, b)  # b knows nothing: reads, then writes
    assert (await latest(), reads) == (2, 1)
    await put(3, a)  # a's memory is stale: refused, reads
    assert (await latest(), reads) == (3, 2)
    await put(2, b)  # late and older: b knows, no write
    assert (await latest(), reads) == (3, 2)
    await put(4, a)  # a's memory is right: no read
    assert (await latest(), reads) == (4, 2)
    await put(3, KnownRevisions())  # late, unknown: read
    assert (await latest(), reads) == (4, 3)
    await put(1, KnownRevisions())  # a replayed first one
    assert await latest() == 4


async def test_one_round_writes_the_bucket_once_with_its_newest_version_before_any_event(
    nats_client: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay hands one payment's queued changes to `deliver` together: the bucket is
    written once, with the newest, before the first event goes out; the events go out in
    order, each reported as stored."""
    js = nats_client.jetstream()
    await ensure_topology(nats_client, js)
    kv = await js.key_value(PAYMENT_STATUS_BUCKET)
    writes = 0
    real_create = kv.create

    async def counted_create(key: str, value: bytes, **kwargs: object) -> int:
        nonlocal writes
        writes += 1
        return await real_create(key, value)

    monkeypatch.setattr(kv, "create", counted_create)  # counts the writes; the real bucket
    payment_id = f"pay_{uuid.uuid4().hex}"
    seen: list[tuple[int, int]] = []

    async def on_event(msg: Msg) -> None:
        # What a client that has just seen this event finds when it polls.
        entry = await kv.get(payment_id)
        polled = PaymentStatusChanged.from_bytes(entry.value or b"").payment.version
        seen.append((PaymentStatusChanged.from_bytes(msg.data).payment.version, polled))

    await nats_client.subscribe(PAYMENT_STATUS_SUBJECT.format(payment_id=payment_id), cb=on_event)
    await nats_client.flush()
    changes = [
        outgoing_status(status_event(payment_id, status, version))
        for version, status in enumerate(
            (PaymentStatus.PENDING, PaymentStatus.VERIFIED, PaymentStatus.PROVISIONED), 1
        )
    ]
    stored: list[str] = []
    await deliver(js, *changes, status_kv=kv, published=lambda e: stored.append(e.msg_id))
    await wait_for(lambda: len(seen) == 3, 5)
    assert stored == [change.msg_id for change in changes]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert writes == 1


async def test_each_event_carries_its_change_correlation_id_and_the_callers_is_kept(
    nats_client: NATS,
) -> None:
    """An event from the outbox goes out under its change's correlation id; one built without
    (a caller's own) under the caller's. The caller's id is never replaced by a new one."""
    js = nats_client.jetstream()
    payment_id = f"pay_{uuid.uuid4().hex}"
    got: list[str | None] = []

    async def on_event(msg: Msg) -> None:
        got.append((msg.headers or {}).get(CORRELATION_HEADER))

    await nats_client.subscribe(PAYMENT_STATUS_SUBJECT.format(payment_id=payment_id), cb=on_event)
    await nats_client.flush()
    first = outgoing_status(status_event(payment_id, PaymentStatus.PENDING, 1))
    from_outbox = OutgoingEvent.from_outbox(
        first.subject, first.msg_id, first.payload, "change-cid-1"
    )
    caller = bind_correlation_id("caller-cid-1")
    try:
        await deliver(js, outgoing_status(status_event(payment_id, PaymentStatus.VERIFIED, 2)))
        assert current_correlation_id() == caller
        await deliver(js, from_outbox)
        await wait_for(lambda: len(got) == 2, 5)
    finally:
        unbind_correlation_id()
    assert got == ["caller-cid-1", "change-cid-1"]


async def test_a_single_replica_status_bucket_answers_direct_gets_even_one_made_before(
    own_nats: NatsServer,
) -> None:
    """On one replica the status bucket answers `$JS.API.DIRECT.GET` (what check-status reads
    by: no JSON or base64 round, half the NATS CPU), and a bucket made before without it (an
    older deployment's) is brought to it at the next start-up; the value read is the newest."""
    nc = await connect_nats(own_nats.url, "test")
    try:
        js = nc.jetstream()
        await js.create_key_value(bucket=PAYMENT_STATUS_BUCKET, history=1)
        stream = PAYMENT_STATUS_STREAM
        assert not (await js.stream_info(stream)).config.allow_direct
        old = await js.key_value(PAYMENT_STATUS_BUCKET)
        payment_id = f"pay_{uuid.uuid4().hex}"
        await old.put(payment_id, status_event(payment_id, PaymentStatus.PENDING, 1).to_bytes())

        await ensure_topology(nc, js)
        await ensure_topology(nc, js)  # and again: nothing left to change
        assert (await js.stream_info(stream)).config.allow_direct

        await old.put(payment_id, status_event(payment_id, PaymentStatus.VERIFIED, 2).to_bytes())
        reply = await nc.request(
            f"$JS.API.DIRECT.GET.{stream}.$KV.{PAYMENT_STATUS_BUCKET}.{payment_id}", b"", 2
        )
        assert PaymentStatusChanged.from_bytes(reply.data).payment.version == 2
        entry = await (await js.key_value(PAYMENT_STATUS_BUCKET)).get(payment_id)
        assert PaymentStatusChanged.from_bytes(entry.value or b"").payment.version == 2
    finally:
        await nc.close()
