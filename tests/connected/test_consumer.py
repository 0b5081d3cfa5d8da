"""The JetStream consumer loop and request/reply, on a real NATS server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from axiom_shared.errors import ApiError
from axiom_shared.nats import (
    Endpoint,
    JetStreamConsumer,
    PermanentError,
    publish_event,
    request,
    serve,
)
from axiom_shared.schemas.base import Message
from axiom_shared.topology import ConsumerSpec

pytestmark = pytest.mark.connected


class Job(Message):
    SCHEMA: ClassVar[str] = "test.job/1"
    n: int


class JobDone(Message):
    SCHEMA: ClassVar[str] = "test.job_done/1"
    n: int
    by: str


@pytest.fixture
async def stream(nats_client: NATS) -> AsyncIterator[tuple[str, str]]:
    """A stream of this test's own: (stream name, subject prefix)."""
    tag = uuid.uuid4().hex[:10]
    name, prefix = f"TEST_{tag}", f"test.{tag}"
    js = nats_client.jetstream()
    await js.add_stream(name=name, subjects=[f"{prefix}.>"])
    yield name, prefix
    await js.delete_stream(name)


def spec_for(stream: tuple[str, str], **overrides: object) -> ConsumerSpec:
    name, prefix = stream
    fields: dict[str, object] = {
        "stream": name,
        "durable": f"worker-{uuid.uuid4().hex[:6]}",
        "filter_subject": f"{prefix}.>",
        "max_deliver": 3,
        "ack_wait": 2.0,
        "retry_delays": (0.05,),
    }
    fields.update(overrides)
    return ConsumerSpec(**fields)  # type: ignore[arg-type]


async def acked(js: JetStreamContext, spec: ConsumerSpec) -> ConsumerInfo:
    """The consumer's state once it holds no unacknowledged message: acks are published, not
    requests, so the server may apply the last one just after the handler returned."""
    info: ConsumerInfo = await js.consumer_info(spec.stream, spec.durable)
    for _ in range(50):
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.1)
        info = await js.consumer_info(spec.stream, spec.durable)
    return info


async def dead_letters(js: JetStreamContext, spec: ConsumerSpec, count: int) -> list[Msg]:
    sub = await js.subscribe(spec.dead_letter_subject(), deliver_policy="all")  # type: ignore[arg-type]
    try:
        return [await sub.next_msg(timeout=5) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def test_failures_are_retried_then_succeed_once(
    nats_client: NATS, stream: tuple[str, str]
) -> None:
    js = nats_client.jetstream()
    spec = spec_for(stream)
    attempts: dict[int, int] = {}
    done: list[int] = []

    async def handler(job: Job, _msg: Msg) -> None:
        attempts[job.n] = attempts.get(job.n, 0) + 1
        if attempts[job.n] < 3:
            raise ConnectionError("RPC down")
        done.append(job.n)

    consumer = JetStreamConsumer(nats_client, js, spec, Job, handler)
    consumer.start()
    try:
        await publish_event(js, f"{stream[1]}.jobs", Job(n=1))
        await asyncio.wait_for(_until(lambda: done == [1]), 10)
        await asyncio.sleep(0.3)
        assert done == [1]
        assert attempts == {1: 3}
    finally:
        await consumer.stop()
    info = await acked(js, spec)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_poison_and_exhausted_messages_are_dead_lettered_without_blocking(
    nats_client: NATS, stream: tuple[str, str]
) -> None:
    js = nats_client.jetstream()
    spec = spec_for(stream)
    handled: list[int] = []

    async def handler(job: Job, _msg: Msg) -> None:
        if job.n == 1:
            raise ConnectionError("always failing")
        if job.n == 2:
            raise PermanentError("order does not exist")
        handled.append(job.n)

    consumer = JetStreamConsumer(nats_client, js, spec, Job, handler, concurrency=1)
    consumer.start()
    try:
        subject = f"{stream[1]}.jobs"
        await publish_event(js, subject, Job(n=1))
        await publish_event(js, subject, Job(n=2))
        await js.publish(subject, b'{"schema": "test.job/1", "n": "not a number"}')
        await publish_event(js, subject, Job(n=3))
        letters = await dead_letters(js, spec, 3)
        await asyncio.wait_for(_until(lambda: handled == [3]), 10)
    finally:
        await consumer.stop()
    reasons = sorted(m.headers["Axiom-Dead-Letter-Reason"] for m in letters if m.headers)
    assert reasons[0].startswith("gave up after 3 deliveries")
    assert reasons[1].startswith("malformed message")
    assert reasons[2] == "permanent error: order does not exist"
    info = await acked(js, spec)
    assert info.num_ack_pending == 0


async def test_stop_finishes_the_message_in_hand(
    nats_client: NATS, stream: tuple[str, str]
) -> None:
    js = nats_client.jetstream()
    spec = spec_for(stream)
    started, finished = asyncio.Event(), []

    async def slow(job: Job, _msg: Msg) -> None:
        started.set()
        await asyncio.sleep(1.0)
        finished.append(job.n)

    consumer = JetStreamConsumer(nats_client, js, spec, Job, slow)
    consumer.start()
    await publish_event(js, f"{stream[1]}.jobs", Job(n=7))
    await asyncio.wait_for(started.wait(), 5)
    await consumer.stop(timeout=5)
    assert finished == [7]
    info = await acked(js, spec)
    assert info.num_ack_pending == 0
    assert info.delivered is not None
    assert info.delivered.consumer_seq == 1


async def test_work_cut_off_by_shutdown_is_redelivered(
    nats_client: NATS, stream: tuple[str, str]
) -> None:
    js = nats_client.jetstream()
    spec = spec_for(stream, ack_wait=1.0)
    started = asyncio.Event()

    async def stuck(_job: Job, _msg: Msg) -> None:
        started.set()
        await asyncio.sleep(30)

    first = JetStreamConsumer(nats_client, js, spec, Job, stuck)
    first.start()
    await publish_event(js, f"{stream[1]}.jobs", Job(n=9))
    await asyncio.wait_for(started.wait(), 5)
    await first.stop(timeout=0.2)  # grace period too short: the work is abandoned, not acked

    got: list[tuple[int, int]] = []

    async def record(job: Job, msg: Msg) -> None:
        got.append((job.n, msg.metadata.num_delivered))

    second = JetStreamConsumer(nats_client, js, spec, Job, record)
    second.start()
    try:
        await asyncio.wait_for(_until(lambda: bool(got)), 10)
    finally:
        await second.stop()
    assert got == [(9, 2)]


async def test_replicas_share_a_work_queue(nats_client: NATS, stream: tuple[str, str]) -> None:
    js = nats_client.jetstream()
    spec = spec_for(stream)
    seen: list[tuple[str, int]] = []

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(job: Job, _msg: Msg) -> None:
            await asyncio.sleep(0.01)
            seen.append((name, job.n))

        return handler

    replicas = [
        JetStreamConsumer(nats_client, js, spec, Job, handler_for(f"r{i}"), concurrency=4)
        for i in range(2)
    ]
    for replica in replicas:
        replica.start()
    try:
        for n in range(40):
            await publish_event(js, f"{stream[1]}.jobs", Job(n=n))
        await asyncio.wait_for(_until(lambda: len(seen) >= 40), 10)
        await asyncio.sleep(0.2)
    finally:
        for replica in replicas:
            await replica.stop()
    assert sorted(n for _, n in seen) == list(range(40))  # each exactly once
    assert {name for name, _ in seen} == {"r0", "r1"}


async def test_request_reply_on_a_queue_group(nats_server: object) -> None:
    from sandbox.infra import NatsServer

    assert isinstance(nats_server, NatsServer)
    from axiom_shared.nats import connect_nats

    subject = f"test.jobs.{uuid.uuid4().hex[:8]}"
    servers = [await connect_nats(nats_server.url, f"replica{i}") for i in range(2)]
    client = await connect_nats(nats_server.url, "client")
    handled: list[str] = []

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(job: Job) -> JobDone:
            if job.n < 0:
                raise ApiError(404, "not_found", "no such job")
            handled.append(name)
            return JobDone(n=job.n * 2, by=name)

        return handler

    try:
        for i, nc in enumerate(servers):
            await serve(nc, "jobs", "1.0.0", [Endpoint("do", subject, Job, handler_for(f"r{i}"))])
        results = await asyncio.gather(
            *(request(client, subject, Job(n=n), JobDone, timeout=2) for n in range(20))
        )
        assert [r.n for r in results] == [n * 2 for n in range(20)]
        assert len(handled) == 20  # each request answered by exactly one replica

        with pytest.raises(ApiError) as missing:
            await request(client, subject, Job(n=-1), JobDone, timeout=2)
        assert (missing.value.status, missing.value.code) == (404, "not_found")

        reply = await client.request(subject, b'{"schema": "test.job/1"}', timeout=2)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "422"

        with pytest.raises(ApiError) as nobody:
            await request(client, "test.nobody.home", Job(n=1), JobDone, timeout=0.5)
        assert nobody.value.status == 503
    finally:
        for nc in [*servers, client]:
            await nc.close()


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():  # noqa: ASYNC110 - polling a plain list filled by handlers
        await asyncio.sleep(0.02)
