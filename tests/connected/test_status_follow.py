"""check-status from followed statuses (`LatestStatus.follow`), against real NATS servers.

The gateway answers a poll from memory, kept current by a subscription to the status bucket's
writes, after one PING/PONG with the server. What a buyer relies on: a poll made after a status
was written (and so after its event could be seen anywhere) shows it, also when the follower
was too slow to take every write, was cut off while writes were made, or is not allowed to
subscribe at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.aio.subscription import DEFAULT_SUB_PENDING_MSGS_LIMIT
from nats.js.errors import APIError
from structlog.testing import capture_logs

from axiom_payments.events import KnownRevisions, deliver
from axiom_payments.events import status_event as outgoing_status
from axiom_shared.metrics import STATUS_FOLLOW_RESETS, STATUS_READS
from axiom_shared.nats import connect_nats
from axiom_shared.payments_client import LatestStatus, PaymentsClient
from axiom_shared.schemas import PaymentStatus
from axiom_shared.topology import PAYMENT_STATUS_BUCKET, ensure_topology
from sandbox.infra import NatsServer
from tests.connected.test_events import status_event
from tests.fixtures.infra import wait_for
from tests.fixtures.notifier import GatewayFactory, NotifierFactory

SUBJECT = f"$KV.{PAYMENT_STATUS_BUCKET}." + "{}"


def followed_reads() -> float:
    value: float = STATUS_READS.labels(source="followed")._value.get()
    return value


def resets() -> float:
    value: float = STATUS_FOLLOW_RESETS._value.get()
    return value


@contextlib.asynccontextmanager
async def slow_link(server: NatsServer, delay: float) -> AsyncIterator[str]:
    """A TCP link to `server` that hands each chunk the server sends on `delay` seconds late,
    in order (what the client sends goes at once): a follower whose reading lags, as a busy
    gateway's does. Yields its `nats://` URL."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, late: float) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver_late() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver_late())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time() + late, chunk))
        except OSError:
            pass
        finally:
            sender.cancel()
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(server.host, server.port)
        for task in (pump(client_r, server_w, 0.0), pump(server_r, client_w, delay)):
            tasks.add(asyncio.create_task(task))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        proxy.close()
        for task in tasks:
            task.cancel()


def change(payment_id: str, version: int) -> bytes:
    status = PaymentStatus.PENDING if version == 1 else PaymentStatus.VERIFIED
    return status_event(payment_id, status, version).to_bytes()


@contextlib.asynccontextmanager
async def follower(
    url: str,
    *,
    follows: bool = True,
    pending_limit: int = DEFAULT_SUB_PENDING_MSGS_LIMIT,
    **login: Any,
) -> AsyncIterator[tuple[NATS, LatestStatus]]:
    """A connection of its own and a `LatestStatus` on it that follows the bucket (or, with
    `follows=False`, was refused); both closed at the end."""
    nc = await connect_nats(url, "test-follower", **login)
    latest = LatestStatus(nc, nc.jetstream(), PaymentsClient(nc, 2.0), pending_limit=pending_limit)
    try:
        assert await latest.follow() is follows
        yield nc, latest
    finally:
        await latest.close()
        await nc.close()


async def polled_version(latest: LatestStatus, payment_id: str) -> int:
    view, body = await latest.encoded(payment_id)
    assert json.loads(body)["version"] == view.version  # the body is that view
    return view.version


async def test_a_followed_poll_is_never_older_than_an_acknowledged_write(
    nats_server: NatsServer, nats_client: NATS
) -> None:
    """8 payments change 25 times each, concurrently, through the payments service's own path
    (`deliver`: the bucket, then the event), while the follower reads its connection 20 ms
    late. A poll made right after a write was acknowledged shows that version, every time;
    after the first poll of a payment, every poll is answered from memory (no bucket read, no
    request to the payments service)."""
    async with (
        slow_link(nats_server, 0.02) as url,
        follower(url) as (_, latest),
    ):
        js = nats_client.jetstream()
        kv = await js.key_value(PAYMENT_STATUS_BUCKET)
        known = KnownRevisions()
        before = followed_reads()

        async def one() -> list[tuple[int, int]]:
            payment_id = f"pay_{uuid.uuid4().hex}"
            seen = []
            for version in range(1, 26):
                event = outgoing_status(status_event(payment_id, PaymentStatus.VERIFIED, version))
                await deliver(js, event, status_kv=kv, known=known)
                seen.append((version, await polled_version(latest, payment_id)))
            return seen

        for seen in await asyncio.gather(*(one() for _ in range(8))):
            assert all(written == polled for written, polled in seen), seen
        assert followed_reads() - before == 8 * 24


async def test_a_read_older_than_a_write_already_received_is_not_followed(
    nats_server: NatsServer, nats_client: NATS
) -> None:
    """The server hands a write to the follower before its stream stores it, so a bucket read
    made meanwhile can be older than a write the follower already let pass (it follows only
    payments it was asked for). Such a read answers that poll but is not followed: the next
    poll reads the bucket again. Here the write is one the bucket refused (a stale expected
    revision): it reaches the follower and is never stored, as a write still on its way."""
    async with follower(nats_server.url) as (_, latest):
        js = nats_client.jetstream()
        payment_id = f"pay_{uuid.uuid4().hex}"
        await js.publish(SUBJECT.format(payment_id), change(payment_id, 1))
        with pytest.raises(APIError):
            await js.publish(
                SUBJECT.format(payment_id),
                change(payment_id, 5),
                headers={"Nats-Expected-Last-Subject-Sequence": "999999999"},
            )
        reads = followed_reads()
        assert [await polled_version(latest, payment_id) for _ in range(3)] == [1, 1, 1]
        assert followed_reads() == reads  # each of them read the bucket
        # Once the bucket holds that version, the payment is followed.
        await js.publish(SUBJECT.format(payment_id), change(payment_id, 5))
        assert [await polled_version(latest, payment_id) for _ in range(3)] == [5, 5, 5]
        assert followed_reads() == reads + 2


async def test_writes_a_slow_follower_dropped_are_never_shown_as_current(
    nats_server: NatsServer, nats_client: NATS
) -> None:
    """A follower that may hold one unapplied write drops most of a burst of 200 (nats-py's
    slow-consumer rule). Whatever it dropped, the next poll shows the newest status: it forgets
    what it followed and reads the bucket again."""
    async with follower(nats_server.url, pending_limit=1) as (_, latest):
        js = nats_client.jetstream()
        payment_id = f"pay_{uuid.uuid4().hex}"
        await js.publish(SUBJECT.format(payment_id), change(payment_id, 1))
        assert await polled_version(latest, payment_id) == 1  # followed from now on
        before = resets()
        for version in range(2, 201):  # one burst: no pause for the follower to apply them
            await nats_client.publish(SUBJECT.format(payment_id), change(payment_id, version))
        await js.publish(SUBJECT.format(payment_id), change(payment_id, 201))  # all stored
        assert await polled_version(latest, payment_id) == 201
        assert resets() > before
        # Followed again a moment later (the time a missed write takes to be stored).
        await asyncio.sleep(1.1)
        assert await polled_version(latest, payment_id) == 201
        await js.publish(SUBJECT.format(payment_id), change(payment_id, 202))
        reads = followed_reads()
        assert await polled_version(latest, payment_id) == 202
        assert followed_reads() == reads + 1


async def test_writes_made_while_the_follower_was_away_are_never_missed(
    own_nats: NatsServer,
) -> None:
    """NATS restarts; a write is made (and acknowledged) before the follower is back. Its
    first poll afterwards shows that write, not the status it followed before, and writes
    after it are followed again."""
    admin = await connect_nats(own_nats.url, "test-writer")
    await ensure_topology(admin, admin.jetstream())
    async with follower(own_nats.url, reconnect_wait=3.0) as (nc, latest):
        payment_id = f"pay_{uuid.uuid4().hex}"
        await admin.jetstream().publish(SUBJECT.format(payment_id), change(payment_id, 1))
        assert await polled_version(latest, payment_id) == 1
        await admin.close()

        await asyncio.to_thread(own_nats.restart)
        writer = await connect_nats(own_nats.url, "test-writer-2")
        try:
            await writer.jetstream().publish(SUBJECT.format(payment_id), change(payment_id, 2))
            assert not nc.is_connected  # the follower is still away: it missed the write
            await wait_for(lambda: nc.is_connected, timeout=15)

            before = resets()
            assert await polled_version(latest, payment_id) == 2
            assert resets() == before + 1
            await asyncio.sleep(1.1)
            assert await polled_version(latest, payment_id) == 2  # followed again from here
            await writer.jetstream().publish(SUBJECT.format(payment_id), change(payment_id, 3))
            reads = followed_reads()
            assert await polled_version(latest, payment_id) == 3
            assert followed_reads() == reads + 1
        finally:
            await writer.close()


async def test_a_follower_not_allowed_to_subscribe_reads_the_bucket(
    nats_server: NatsServer, nats_client: NATS
) -> None:
    """Permissions older than the gateway (a deploy half done): the server refuses the
    subscription. The follower sees the refusal and reads the bucket on every poll, which is
    still never older than a write."""
    login = nats_server.login("notifier")  # allowed to read the bucket, not to follow it
    async with follower(
        login["nats_url"], follows=False, user="notifier", password=login["nats_password"]
    ) as (_, latest):
        js = nats_client.jetstream()
        payment_id = f"pay_{uuid.uuid4().hex}"
        before = followed_reads()
        for version in (1, 2, 3):
            await js.publish(SUBJECT.format(payment_id), change(payment_id, version))
            assert await polled_version(latest, payment_id) == version
        assert followed_reads() == before


async def test_only_the_gateway_follows_the_status_bucket(
    nats_server: NatsServer, notifier_factory: NotifierFactory, gateway_factory: GatewayFactory
) -> None:
    """The gateway (check-status) follows the bucket's writes; the notifier reads it for the
    first status of a stream and must not take every status write of the system as well (nor,
    where NATS grants it no such subscription, warn at every start that it was refused)."""
    with capture_logs() as logged:
        await notifier_factory()
    assert not [line for line in logged if "status bucket" in line["event"]]
    await gateway_factory()

    async def subscribers() -> set[str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{nats_server.monitor_url}/connz?subs=1") as resp,
        ):
            connz = await resp.json()
        return {
            conn.get("name", "")
            for conn in connz["connections"]
            if f"$KV.{PAYMENT_STATUS_BUCKET}.>" in conn.get("subscriptions_list", [])
        }

    assert await subscribers() == {"gateway"}
