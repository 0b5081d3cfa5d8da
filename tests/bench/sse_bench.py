"""Live status fan-out: 10,000, then 20,000 SSE streams open at once on one notifier process.

Each of `PAYMENTS` payments is watched by `streams // PAYMENTS` streams (a browser tab each);
then every payment changes status once (published as the payments service does: JetStream +
KV) and each stream's receipt of it is timed against the moment its change was published.
Baselines, measured in the same run on the same notifier: latency beside a single stream
watching a single payment; memory beside the same notifier before any stream was opened.

The clients are raw asyncio connections (one socket each, reading lines), so that the load
generator stays light enough not to be what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.client import Client as NATS
from solders.pubkey import Pubkey

from axiom_payments.events import deliver, status_event
from axiom_shared.nats import connect_nats
from axiom_shared.schemas import ChangeSource, PaymentStatus, PaymentStatusChanged, PaymentView
from axiom_shared.topology import ensure_topology
from tests.bench.harness import Figure, Report, percentile
from tests.bench.stack import BenchStack

#: Each round opens this many streams at once (10k, then the default maximum of 20k; fewer
#: where the hard limit on open files is lower: the notifier needs one per stream).
STREAM_COUNTS = (10_000, 20_000)
#: Files the notifier and this process need besides the streams (listeners, NATS, pipes...).
SPARE_FILES = 100
PAYMENTS = 1_000
BASELINE_CHANGES = 200
CONNECT_BATCH = 250
#: Status changes published per second during the measurement (each reaches 10 streams).
CHANGE_RATE = 200
PATH = "/api/sse/payment-status/{payment_id}"


def raise_open_files_limit(needed: int) -> int:
    """Lift the soft limit towards `needed`; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard != resource.RLIM_INFINITY else needed
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft


def stream_counts() -> list[int]:
    allowed = raise_open_files_limit(max(STREAM_COUNTS) + SPARE_FILES) - SPARE_FILES
    return [min(count, allowed) for count in STREAM_COUNTS]


def view(payment_id: str, status: PaymentStatus, version: int) -> PaymentView:
    now = datetime.now(UTC)
    key = str(Pubkey.new_unique())
    return PaymentView(
        payment_id=payment_id,
        status=status,
        order_id="axiomid-pro-monthly",
        amount_lamports=100_000_000,
        recipient=key,
        reference=key,
        expires_at=now + timedelta(minutes=15),
        created_at=now,
        updated_at=now,
        version=version,
    )


async def publish(nc: NATS, payment_id: str, status: PaymentStatus, version: int) -> float:
    """Publish one change; returns when publishing started (perf_counter)."""
    started = time.perf_counter()
    event = PaymentStatusChanged(
        payment=view(payment_id, status, version),
        previous_status=None,
        source=ChangeSource.OPERATOR,
    )
    await deliver(nc.jetstream(), status_event(event))
    return started


class Stream:
    """One raw SSE client: records when each event id arrives."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        self.received: dict[int, float] = {}
        self.first = asyncio.Event()
        self.arrived = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._writer = writer
        path = PATH.format(payment_id=self.payment_id)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        self._task = asyncio.create_task(self._read(reader))
        await asyncio.wait_for(self.first.wait(), 30)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        event_id: int | None = None
        while line := await reader.readline():
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line in (b"\r\n", b"\n") and event_id is not None:
                self.received[event_id] = time.perf_counter()
                event_id = None
                self.first.set()
                self.arrived.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux: VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def open_all(streams: list[Stream], port: int) -> None:
    for start in range(0, len(streams), CONNECT_BATCH):
        await asyncio.gather(*(s.open(port) for s in streams[start : start + CONNECT_BATCH]))


@dataclass
class Load:
    streams: int
    latencies: list[float]
    missing: int
    open_seconds: float
    rss: float


async def load(nc: NATS, port: int, pid: int, count: int) -> Load:
    """`count` streams over PAYMENTS payments; every payment then changes once, paced."""
    payment_ids = [f"bench_{i}_{secrets.token_hex(4)}" for i in range(PAYMENTS)]
    for payment_id in payment_ids:
        await publish(nc, payment_id, PaymentStatus.PENDING, 1)
    streams = [Stream(payment_ids[n % PAYMENTS]) for n in range(count)]
    try:
        opened = time.perf_counter()
        await open_all(streams, port)
        open_seconds = time.perf_counter() - opened
        # Past the first heartbeats of every stream: what holding them costs, not opening.
        await asyncio.sleep(2.0)
        rss = rss_mib(pid)
        for stream in streams:
            stream.arrived.clear()
        # Paced, as changes happen in life (not one burst): CHANGE_RATE payments a second.
        published: dict[str, float] = {}
        begin = time.perf_counter()
        for index, payment_id in enumerate(payment_ids):
            delay = begin + index / CHANGE_RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            published[payment_id] = await publish(nc, payment_id, PaymentStatus.VERIFIED, 2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.arrived.wait() for s in streams)), 60)
        latencies = [s.received[2] - published[s.payment_id] for s in streams if 2 in s.received]
    finally:
        await asyncio.gather(*(s.close() for s in streams))
    return Load(len(streams), latencies, len(streams) - len(latencies), open_seconds, rss)


async def run(stack: BenchStack, report: Report) -> None:
    counts = stream_counts()
    notifier = await stack.start_service(
        "notifier",
        SSE_MAX_STREAMS=str(max(counts) + 100),
        SSE_MAX_STREAMS_PER_CLIENT=str(max(counts) + 100),
        # The default: what the heartbeat clock costs is part of what is measured.
        SSE_HEARTBEAT_INTERVAL="15",
    )
    assert notifier.proc is not None
    assert notifier.port is not None
    pid, port = notifier.proc.pid, notifier.port
    nc = await connect_nats(stack.nats.url, "sse-bench")
    loads: list[Load] = []
    try:
        await ensure_topology(nc, nc.jetstream())
        await asyncio.sleep(1.0)  # the notifier's feed consumer exists (it reads new changes)
        idle_rss = rss_mib(pid)

        # Baseline: one stream on one payment, BASELINE_CHANGES changes one after the other.
        single = Stream("bench_single_" + secrets.token_hex(4))
        await publish(nc, single.payment_id, PaymentStatus.PENDING, 1)
        await single.open(port)
        single_latencies = []
        for version in range(2, BASELINE_CHANGES + 2):
            single.arrived.clear()
            started = await publish(nc, single.payment_id, PaymentStatus.PENDING, version)
            await asyncio.wait_for(single.arrived.wait(), 10)
            single_latencies.append(single.received[version] - started)
        await single.close()

        for count in counts:
            loads.append(await load(nc, port, pid, count))
            await asyncio.sleep(2.0)  # the streams of this round are gone before the next
    finally:
        await nc.close()

    baseline = "1 stream, 1 payment (same notifier)"
    for result in loads:
        name = f"SSE fan-out ({result.streams:,} streams)"
        notes = (
            f"{result.streams} streams over {PAYMENTS} payments, opened in "
            f"{result.open_seconds:.1f} s; {CHANGE_RATE} changes/s "
            f"({CHANGE_RATE * result.streams // PAYMENTS} events/s); missing={result.missing}"
            + ("" if result.streams in STREAM_COUNTS else "; capped by the open-files limit")
        )
        for label, p in (("fan-out latency p50", 50), ("fan-out latency p99", 99)):
            report.add(
                Figure(
                    name,
                    label,
                    percentile(result.latencies, p) * 1000 if result.latencies else float("nan"),
                    "ms",
                    baseline,
                    percentile(single_latencies, p) * 1000,
                    higher_is_better=False,
                    notes=notes,
                )
            )
        per_stream = (result.rss - idle_rss) * 1024 / max(result.streams, 1)
        report.add(
            Figure(
                name,
                "notifier RSS",
                result.rss,
                "MiB",
                "same notifier, no stream open",
                idle_rss,
                higher_is_better=False,
                notes=f"{per_stream:.1f} KiB per stream",
            )
        )


async def main() -> None:
    """`python -m tests.bench.sse_bench`: this benchmark alone."""
    from tests.bench.stack import bench_stack

    report = Report()
    async with bench_stack() as stack:
        await run(stack, report)
    print()
    print(report.table())
    report.write(Path("var") / "bench-sse.json")


if __name__ == "__main__":
    asyncio.run(main())
