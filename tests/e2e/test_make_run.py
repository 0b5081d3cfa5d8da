"""`make run` (deploy.local.stack): brings up everything on a machine with nothing running,
reuses what answers, and Ctrl-C stops exactly what it started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from deploy.local.processes import PORT_VARS
from sandbox.infra import NatsServer, free_port, nats_answers, redis_answers

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def run_stack(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.local.stack",
        "run",
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


async def read_until(proc: asyncio.subprocess.Process, marker: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []

    async def reader() -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError("stack exited early:\n" + "".join(lines[-40:]))
            lines.append(raw.decode(errors="replace"))
            if marker in lines[-1]:
                return

    await asyncio.wait_for(reader(), timeout)
    return lines


def stack_env(tmp_path: Path, nats_url: str, redis_url: str) -> dict[str, str]:
    env = {
        "AXIOM_VAR_DIR": str(tmp_path / "var"),
        "NATS_URL": nats_url,
        "REDIS_URL": redis_url,
        "SOLANA_RPC_URL": f"http://127.0.0.1:{free_port()}",
        "AMADEUS_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    for var in PORT_VARS.values():
        env[var] = str(free_port())
    return env


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    rest = await asyncio.wait_for(proc.stdout.read(), 30)
    return await proc.wait(), rest.decode(errors="replace")


async def test_fresh_machine_starts_its_own_servers_and_stops_them(tmp_path: Path) -> None:
    nats_port, redis_port = free_port(), free_port()
    env = stack_env(tmp_path, f"nats://127.0.0.1:{nats_port}", f"redis://127.0.0.1:{redis_port}/0")
    proc = await run_stack(env)
    try:
        lines = await read_until(proc, "Ctrl-C stops everything", 60)
        text = "".join(lines)
        assert "started nats-server -js" in text
        assert "started redis-server" in text
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for var in PORT_VARS.values():
                async with http.get(f"http://127.0.0.1:{env[var]}/healthz") as resp:
                    assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{env['GATEWAY_PORT']}/readyz") as resp:
                assert resp.status == 200
            # The Solana sandbox's PubSub WebSocket is up where the summary says.
            [pubsub_url] = re.findall(r"solana PubSub\s+(ws://\S+)", text)
            async with http.ws_connect(pubsub_url) as ws:
                await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "slotSubscribe"})
                assert isinstance((await ws.receive_json(timeout=5))["result"], int)
        assert (tmp_path / "var" / "payments.db").exists()
        assert (tmp_path / "var" / "bookings.db").exists()
    finally:
        code, rest = await stop(proc)
    assert code == 0, rest
    assert not nats_answers("127.0.0.1", nats_port)
    assert not redis_answers("127.0.0.1", redis_port)


async def test_reuses_a_running_nats_and_leaves_it_running(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    redis_port = free_port()
    env = stack_env(tmp_path, nats_server.url, f"redis://127.0.0.1:{redis_port}/0")
    proc = await run_stack(env)
    try:
        text = "".join(await read_until(proc, "Ctrl-C stops everything", 60))
        assert f"reusing NATS at {nats_server.url}" in text
    finally:
        code, _ = await stop(proc)
    assert code == 0
    assert nats_answers("127.0.0.1", nats_server.port)  # not ours to stop
    assert not redis_answers("127.0.0.1", redis_port)
