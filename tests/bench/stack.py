"""The processes a benchmark measures: our own NATS, Redis, the Solana sandbox, services and
the hello-world baseline, all on free loopback ports, all stopped at the end."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.processes import ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port

PAYMENT_LIMIT_LIFTED = '{"prefix": "/api/pay/", "methods": ["POST"], "limit": 1000000, "window": 1}'
ACCOUNT_LIMIT_LIFTED = (
    '{"prefix": "/api/pay/req/", "methods": ["POST"], "limit": 1000000, "window": 1}'
)


@dataclass
class BenchStack:
    workdir: Path
    nats: NatsServer
    redis: RedisServer
    solana_url: str
    env: dict[str, str]
    children: list[ChildProcess] = field(default_factory=list)

    async def start_service(self, name: str, **env: str) -> ChildProcess:
        child = service_process(name, {**self.env, **env}, port=free_port(), sink=quiet)
        await child.start()
        await child.wait_healthy(30)
        self.children.append(child)
        return child

    async def stop_all(self) -> None:
        """Stop the services and baselines started so far (not NATS, Redis or the chain), so
        that one benchmark's leftovers never load the next one."""
        keep = [c for c in self.children if c.name == "solana"]
        for child in reversed(self.children):
            if child not in keep:
                await child.terminate(10)
        self.children = keep

    def fresh_db(self, name: str) -> dict[str, str]:
        """Environment pointing the payments service at a DB of this benchmark's own."""
        return {"TURSO_DB_URL": f"file:{self.workdir / (name + '.db')}"}

    async def start_module(
        self, name: str, module: str, *args: str, port: int | None = None, path: str = "/"
    ) -> ChildProcess:
        """`python -m module --port <port> *args` as a baseline or sandbox of this run, ready
        once `path` answers over HTTP."""
        port = port or free_port()
        child = ChildProcess(
            name,
            [sys.executable, "-m", module, "--port", str(port), *args],
            {},
            port,
            quiet,
            any_http_answer=True,
        )
        await child.start()
        self.children.append(child)
        await child.wait_healthy(20, path=path)
        return child

    async def start_hello(self) -> ChildProcess:
        return await self.start_module("hello", "tests.bench.hello")


@contextlib.asynccontextmanager
async def bench_stack() -> AsyncIterator[BenchStack]:
    with tempfile.TemporaryDirectory(prefix="axiom-bench-") as tmp:
        workdir = Path(tmp)
        nats, redis = NatsServer(data_dir=str(workdir / "nats")), RedisServer()
        nats.start()
        redis.start()
        solana_port = free_port()
        solana = ChildProcess(
            "solana",
            [
                sys.executable,
                "-m",
                "sandbox.solana",
                "--port",
                str(solana_port),
                # Fast slots: the benchmarks measure our services, not the wait for finality.
                "--slot-interval",
                "0.1",
                "--finality-depth",
                "8",
            ],
            {},
            solana_port,
            quiet,
            any_http_answer=True,
        )
        env = {
            "NATS_URL": nats.url,
            "REDIS_URL": redis.url,
            "TURSO_DB_URL": f"file:{workdir / 'payments.db'}",
            "BOOKINGS_DB_URL": f"file:{workdir / 'bookings.db'}",
            "SOLANA_RPC_URL": f"http://127.0.0.1:{solana_port}",
            "LOG_LEVEL": "WARNING",
            # On the sandboxes: development (the development merchant wallet).
            "ENVIRONMENT": "development",
            # One load generator on 127.0.0.1 is every client here: the payment limits are
            # lifted (still evaluated on every request, so their cost is measured).
            "PAYMENT_RATE_LIMIT": PAYMENT_LIMIT_LIFTED,
            "ACCOUNT_RATE_LIMIT": ACCOUNT_LIMIT_LIFTED,
        }
        stack = BenchStack(workdir, nats, redis, env["SOLANA_RPC_URL"], env)
        try:
            await solana.start()
            await solana.wait_healthy(20)
            stack.children.append(solana)
            yield stack
        finally:
            for child in reversed(stack.children):
                await child.terminate(10)
            nats.cleanup()
            redis.cleanup()
