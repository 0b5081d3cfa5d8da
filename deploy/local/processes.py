"""Child processes of the local stack (and of the tests that run services as real processes):
start with an environment, prefix every output line with the child's name, wait for
`/healthz`, stop with SIGTERM (then SIGKILL after a grace period)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sandbox.infra import NATS_AUTH_DIR_VAR

SERVICES: dict[str, tuple[str, int]] = {
    # name: (python module, default port)
    "gateway": ("axiom_gateway", 8080),
    "notifier": ("axiom_notifier", 8081),
    "payments": ("axiom_payments", 8082),
    "verifier": ("axiom_verifier", 8083),
    "amadeus-proxy": ("axiom_amadeus_proxy", 8084),
}

PORT_VARS = {
    "gateway": "GATEWAY_PORT",
    "notifier": "NOTIFIER_PORT",
    "payments": "PAYMENTS_PORT",
    "verifier": "VERIFIER_PORT",
    "amadeus-proxy": "AMADEUS_PROXY_PORT",
}


def quiet(_name: str, _line: str) -> None:
    """A sink that drops a child's output (tests and benchmarks read what they need elsewhere)."""


def _default_sink(name: str, line: str) -> None:
    sys.stdout.write(f"[{name:>13}] {line}")
    sys.stdout.flush()


@dataclass
class ChildProcess:
    name: str
    argv: list[str]
    env: Mapping[str, str]
    port: int | None = None
    sink: Callable[[str, str], None] = _default_sink
    cwd: str | None = None
    proc: asyncio.subprocess.Process | None = None
    #: Stand-ins without a health route count as up once they answer HTTP at all.
    any_http_answer: bool = False
    lines: list[str] = field(default_factory=list)
    _pump: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, **self.env}
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._read_output())

    async def _read_output(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if len(self.lines) > 5000:
                del self.lines[:1000]
            self.sink(self.name, line)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait_healthy(self, timeout: float = 30.0, path: str = "/healthz") -> float:
        """Seconds until `path` answered 200 (for `/healthz`, with status `ok`: a service
        answers `starting` while it waits for NATS); raises TimeoutError otherwise."""
        started = time.monotonic()
        deadline = started + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"{self.name} exited with {self.returncode}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.base_url + path) as resp:
                        if self.any_http_answer and resp.status < 500:
                            return time.monotonic() - started
                        if resp.status == 200 and await _started(resp):
                            return time.monotonic() - started
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} did not answer {path} within {timeout} s")

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2)
        return code

    async def terminate(self, grace: float = 10.0) -> int:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.wait_for(self.wait(), grace)
            except TimeoutError:
                self.kill()
        return await self.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


async def _started(resp: aiohttp.ClientResponse) -> bool:
    """Not the `starting` answer of a service still waiting for NATS."""
    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
        body = await resp.json()
        return not (isinstance(body, dict) and body.get("status") == "starting")
    return True


def service_process(
    name: str,
    env: Mapping[str, str],
    port: int | None = None,
    sink: Callable[[str, str], None] = _default_sink,
) -> ChildProcess:
    module, default_port = SERVICES[name]
    port = port or int(os.environ.get(PORT_VARS[name]) or default_port)
    full_env = {**env, PORT_VARS[name]: str(port), "LOG_JSON": env.get("LOG_JSON", "true")}
    auth_dir = full_env.pop(NATS_AUTH_DIR_VAR, None)
    if auth_dir:
        # A NATS with one user per service (sandbox.infra.NatsServer): each logs in as itself.
        full_env["NATS_USER"] = name
        full_env["NATS_PASSWORD_FILE"] = str(Path(auth_dir) / f"{name}.password")
    return ChildProcess(
        name=name,
        argv=[sys.executable, "-m", module],
        env=full_env,
        port=port,
        sink=sink,
    )
