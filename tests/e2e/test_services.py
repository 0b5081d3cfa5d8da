"""The five services as real processes: up within 30 s, ready, riding out a NATS restart,
and leaving cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from deploy.local.processes import SERVICES, ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
async def stack(
    own_nats: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[dict[str, ChildProcess]]:
    env = {
        **own_nats.client_env(),
        "REDIS_URL": redis_server.url,
        "TURSO_DB_URL": f"file:{tmp_path / 'payments.db'}",
        "BOOKINGS_DB_URL": f"file:{tmp_path / 'bookings.db'}",
        "SHUTDOWN_TIMEOUT": "8",
    }
    children = {name: service_process(name, env, port=free_port(), sink=quiet) for name in SERVICES}
    for child in children.values():
        await child.start()
    try:
        yield children
    finally:
        for child in children.values():
            await child.terminate(10)


async def readiness(http: aiohttp.ClientSession, child: ChildProcess) -> int:
    try:
        async with http.get(child.base_url + "/readyz") as resp:
            body = await resp.json()
            assert body["status"] in ("ready", "unavailable")
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def wait_all(
    http: aiohttp.ClientSession, children: dict[str, ChildProcess], status: int, timeout: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        codes = await asyncio.gather(*(readiness(http, c) for c in children.values()))
        if all(code == status for code in codes):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    codes = await asyncio.gather(*(readiness(http, c) for c in children.values()))
    raise AssertionError(
        f"readyz not all {status} after {timeout} s: {dict(zip(children, codes, strict=True))}"
    )


async def test_services_start_and_recover_from_a_nats_restart(
    stack: dict[str, ChildProcess], own_nats: NatsServer
) -> None:
    startup = await asyncio.gather(*(c.wait_healthy(30) for c in stack.values()))
    assert max(startup) < 30
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        await wait_all(http, stack, 200, 10)
        async with http.get(stack["gateway"].base_url + "/readyz") as resp:
            assert await resp.json() == {
                "status": "ready",
                "checks": {"nats": True, "redis": True},
            }

        own_nats.stop()
        down = await wait_all(http, stack, 503, 15)
        own_nats.start()  # same port, same JetStream store
        recovered = await wait_all(http, stack, 200, 10)
        print(
            f"\nstart-up max {max(startup):.2f}s; all 503 {down:.2f}s after NATS stopped; "
            f"all ready {recovered:.2f}s after it came back"
        )
        assert all(c.running for c in stack.values())


async def test_sigterm_with_requests_in_flight_exits_zero(
    stack: dict[str, ChildProcess],
) -> None:
    await asyncio.gather(*(c.wait_healthy(30) for c in stack.values()))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        await wait_all(http, stack, 200, 10)
        statuses: list[int] = []

        async def hammer(child: ChildProcess) -> None:
            while child.running:
                with contextlib.suppress(aiohttp.ClientConnectionError, TimeoutError):
                    async with http.get(child.base_url + "/metrics") as resp:
                        await resp.read()
                        statuses.append(resp.status)
                await asyncio.sleep(0)

        for name, child in stack.items():
            load = [asyncio.create_task(hammer(child)) for _ in range(4)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            code = await child.terminate(grace=15)
            took = time.monotonic() - started
            await asyncio.gather(*load)
            assert code == 0, f"{name} exited with {code}"
            assert took < 10, f"{name} took {took:.1f}s to stop"
        # Answers given before the listener closed were all complete successes.
        assert statuses
        assert set(statuses) == {200}
