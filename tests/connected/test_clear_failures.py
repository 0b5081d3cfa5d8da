"""Failures that read as what they are, against real processes: a bad setting or an unreadable
secret file is one line naming the variable and exit 2; with NATS absent a service is alive
(`/healthz` 200), not ready (`/readyz` 503), says "waiting for NATS at host:port" with a
growing pause, and becomes ready once NATS appears; `axiom-ops` gives up within its timeout;
a port in use is one line."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from deploy.local.processes import PORT_VARS, SERVICES, quiet, service_process
from sandbox.infra import NatsServer, free_port

pytestmark = pytest.mark.connected

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    done = subprocess.run(
        argv,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def run_module(module: str, env: dict[str, str]) -> tuple[int, str, str]:
    return run([sys.executable, "-m", module], env)


# (service, environment, the variable the one line must name)
BAD_SETTINGS = [
    ("notifier", {"NOTIFIER_PORT": "eighty"}, "NOTIFIER_PORT"),
    ("notifier", {"SSE_TRUSTED_PROXIES": "not-a-network"}, "SSE_TRUSTED_PROXIES"),
    ("gateway", {"RATE_LIMITS": "{not json"}, "RATE_LIMITS"),
    (
        "gateway",
        {"HELIUS_WEBHOOK_SECRET_FILE": "/nonexistent/helius"},
        "HELIUS_WEBHOOK_SECRET_FILE",
    ),
    ("payments", {"ENVIRONMENT": "production", "MERCHANT_WALLET": ""}, "MERCHANT_WALLET"),
    ("payments", {"TURSO_DB_AUTH_TOKEN_FILE": "/nonexistent/token"}, "TURSO_DB_AUTH_TOKEN_FILE"),
    ("verifier", {"NATS_PASSWORD_FILE": "/nonexistent/nats"}, "NATS_PASSWORD_FILE"),
    ("verifier", {"NATS_CONNECT_TIMEOUT": "-1"}, "NATS_CONNECT_TIMEOUT"),
    ("amadeus-proxy", {"NATS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "NATS_TLS_CA_FILE"),
    ("amadeus-proxy", {"AMADEUS_CLIENT_SECRET_FILE": "/"}, "AMADEUS_CLIENT_SECRET_FILE"),
]


@pytest.mark.parametrize(("service", "env", "variable"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(
    service: str, env: dict[str, str], variable: str
) -> None:
    # Nothing listens there: a service that got past its settings would wait, not exit.
    env = {"NATS_URL": f"nats://127.0.0.1:{free_port()}", PORT_VARS[service]: "0", **env}
    env.setdefault("ENVIRONMENT", "development")
    code, out, err = run_module(SERVICES[service][0], env)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("configuration error: ")
    assert variable in lines[0]
    assert "Traceback" not in out + err


def test_a_secret_value_never_appears_in_the_error(tmp_path: Path) -> None:
    secret = "s3cret-value-that-must-not-leak"
    env = {
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "GATEWAY_PORT": "0",
        "ADMIN_TOKEN": secret,
        "RATE_LIMITS": secret,
    }
    code, out, err = run_module("axiom_gateway", env)
    assert code == 2
    assert secret not in out + err


@pytest.fixture
def absent_nats_port() -> int:
    return free_port()


async def get(url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
        http.get(url) as resp,
    ):
        return resp.status


async def wait_alive(base_url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await get(base_url + "/healthz") == 200:
                return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, "no /healthz answer"
        await asyncio.sleep(0.1)


async def test_without_nats_a_service_is_alive_not_ready_and_waits_for_it(
    tmp_path: Path, absent_nats_port: int
) -> None:
    env = {
        "NATS_URL": f"nats://127.0.0.1:{absent_nats_port}",
        "LOG_JSON": "true",
        "LOG_LEVEL": "INFO",
    }
    child = service_process("notifier", env, port=free_port(), sink=quiet)
    await child.start()
    nats = NatsServer(port=absent_nats_port, data_dir=str(tmp_path / "nats"))
    try:
        await wait_alive(child.base_url)
        assert await get(child.base_url + "/readyz") == 503
        waiting = f"waiting for NATS at 127.0.0.1:{absent_nats_port}"
        deadline = time.monotonic() + 10
        while sum(waiting in line for line in child.lines) < 3:
            assert time.monotonic() < deadline, "".join(child.lines[-10:])
            await asyncio.sleep(0.1)
        # The pause grows: not "nats error" twice a second for ever.
        pauses = [line for line in child.lines if waiting in line]
        assert '"retry_in": 0.5' in pauses[0]
        assert '"retry_in": 1.0' in pauses[1]
        assert '"retry_in": 2.0' in pauses[2]
        assert not any("Traceback" in line for line in child.lines)

        nats.start()
        deadline = time.monotonic() + 20
        while await get(child.base_url + "/readyz") != 200:
            assert time.monotonic() < deadline, "".join(child.lines[-10:])
            await asyncio.sleep(0.2)
        assert await get(child.base_url + "/healthz") == 200
    finally:
        code = await child.terminate(15)
        nats.cleanup()
    assert code == 0, "".join(child.lines[-20:])


def test_axiom_ops_gives_up_on_an_absent_nats_within_its_timeout(
    tmp_path: Path, absent_nats_port: int
) -> None:
    env = {
        "NATS_URL": f"nats://127.0.0.1:{absent_nats_port}",
        "TURSO_DB_URL": f"file:{tmp_path / 'payments.db'}",
        "REQUEST_TIMEOUT": "2",
    }
    started = time.monotonic()
    code, _out, err = run([str(Path(sys.executable).parent / "axiom-ops"), "dlq", "list"], env)
    elapsed = time.monotonic() - started
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"axiom-ops: NATS at 127.0.0.1:{absent_nats_port} did not accept")
    assert "within 2 s" in last
    assert "Traceback" not in err
    # Start-up (imports, DB) plus the 2 s it allows itself, never a hang.
    assert elapsed < 20


def test_a_service_port_in_use_is_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"NATS_URL": f"nats://127.0.0.1:{free_port()}", "VERIFIER_PORT": str(port)}
        code, out, err = run_module("axiom_verifier", env)
    assert code == 1, (out, err)
    # The log (JSON on stderr) said "starting"; then one line, no traceback.
    assert err.strip().splitlines()[-1] == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use"
        " (set VERIFIER_PORT to another port)"
    )
    assert "Traceback" not in err


def test_make_run_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    env = {
        "AXIOM_VAR_DIR": str(tmp_path / "var"),
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SOLANA_RPC_URL": f"http://127.0.0.1:{free_port()}",
        "AMADEUS_BASE_URL": f"http://127.0.0.1:{free_port()}",
        **{var: str(free_port()) for var in PORT_VARS.values()},
    }
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env["GATEWAY_PORT"] = str(holder.getsockname()[1])
        code, out, err = run([sys.executable, "-m", "deploy.local.stack", "run"], env)
    assert code == 2, out + err
    assert out.strip().splitlines() == [
        f"[        stack] port {env['GATEWAY_PORT']} (GATEWAY_PORT, gateway) is already in use:"
        " free it or set GATEWAY_PORT"
    ]
    assert "Traceback" not in err
