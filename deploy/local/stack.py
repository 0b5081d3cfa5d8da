"""`make run`: the whole stack on one machine, on embedded defaults.

Reuses NATS and Redis when `NATS_URL` / `REDIS_URL` already answer, otherwise starts its own
(data under `var/`), migrates the libSQL files under `var/`, starts the sandboxes and the five
services with prefixed logs, prints where everything is (the Solana sandbox's PubSub
WebSocket included: RPC port + 1, or `SOLANA_WS_URL`'s port), and on Ctrl-C (or SIGTERM)
stops exactly what it started, services first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
from solders.pubkey import Pubkey

from axiom_amadeus_proxy.app import bookings_migrations
from axiom_payments.app import merchant_keys, payments_migrations
from axiom_payments.settings import PaymentsSettings
from axiom_shared.db import open_database
from axiom_shared.migrations import Migration, migrate
from axiom_shared.spl_token import associated_token_address
from deploy.local.demo import run_demo
from deploy.local.processes import PORT_VARS, SERVICES, ChildProcess, service_process
from sandbox.infra import (
    ManagedServer,
    NatsServer,
    RedisServer,
    nats_answers,
    redis_answers,
)

ROOT = Path(__file__).resolve().parents[2]
#: Local state (DB files, NATS and Redis data); `AXIOM_VAR_DIR` moves it (the tests do).
VAR = Path(os.environ.get("AXIOM_VAR_DIR") or ROOT / "var").resolve()

DEFAULTS = {
    "NATS_URL": "nats://127.0.0.1:4222",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "TURSO_DB_URL": f"file:{VAR / 'payments.db'}",
    "BOOKINGS_DB_URL": f"file:{VAR / 'bookings.db'}",
    "SOLANA_RPC_URL": "http://127.0.0.1:8899",
    # The Solana sandbox's test USDC mint (`sandbox.solana.tokens.SANDBOX_USDC_MINT`, from a
    # public seed): USDC items are paid in it locally.
    "USDC_MINT": "Fffsmmww5vM11qFBorU9XziRoK72VDzC9nWiojq6JBpe",
    "AMADEUS_BASE_URL": "http://127.0.0.1:8890",
    "LOG_JSON": "false",
    # A local stack on sandboxes: development (a development merchant address is allowed).
    "ENVIRONMENT": "development",
}

#: Local stand-ins started beside the services when their package is present.
SANDBOXES = {
    "solana-sandbox": ("sandbox.solana", "SOLANA_RPC_URL"),
    "amadeus-sandbox": ("sandbox.amadeus", "AMADEUS_BASE_URL"),
}


def say(text: str) -> None:
    sys.stdout.write(f"[        stack] {text}\n")
    sys.stdout.flush()


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def port_taken(host: str, port: int) -> bool:
    """True when something already listens on (or holds) `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def busy_ports(env: dict[str, str]) -> list[str]:
    """What `make run` would start on a port something else already holds, one line each."""
    problems = []
    for name, (_module, default_port) in SERVICES.items():
        var = PORT_VARS[name]
        port = int(os.environ.get(var) or default_port)
        if port_taken("127.0.0.1", port):
            problems.append(f"port {port} ({var}, {name}) is already in use: free it or set {var}")
    for name, (_module, url_var) in SANDBOXES.items():
        if importlib.util.find_spec(_module) is None:
            continue
        port = _host_port(env[url_var], 80)[1]
        if port_taken("127.0.0.1", port):
            problems.append(
                f"port {port} ({url_var}, {name}) is already in use: free it or set {url_var}"
            )
    for url_var, what, default_port, answers in (
        ("NATS_URL", "NATS", 4222, nats_answers),
        ("REDIS_URL", "Redis", 6379, redis_answers),
    ):
        host, port = _host_port(env[url_var], default_port)
        if not answers(host, port) and port_taken(host, port):
            problems.append(
                f"port {port} ({url_var}) is in use by something that is not {what}:"
                f" free it or set {url_var}"
            )
    return problems


def ensure_infra(env: dict[str, str]) -> list[ManagedServer]:
    """Reuse NATS/Redis where they answer; start our own where they do not."""
    started: list[ManagedServer] = []
    host, port = _host_port(env["NATS_URL"], 4222)
    if nats_answers(host, port):
        say(f"reusing NATS at {env['NATS_URL']}")
    else:
        nats_server = NatsServer(port=port, data_dir=str(VAR / "nats"))
        nats_server.start()
        started.append(nats_server)
        # Each service logs in as its own NATS user (passwords in var/nats/auth/).
        env.update(nats_server.client_env())
        say(
            f"started nats-server -js on {nats_server.url} (data in var/nats, one user per"
            " service: var/nats/auth)"
        )
    host, port = _host_port(env["REDIS_URL"], 6379)
    if redis_answers(host, port):
        say(f"reusing Redis at {env['REDIS_URL']}")
    else:
        redis_server = RedisServer(port=port, data_dir=str(VAR / "redis"))
        redis_server.start()
        started.append(redis_server)
        say(f"started redis-server on {redis_server.url}")
    return started


async def migrate_all(env: dict[str, str]) -> None:
    targets: list[tuple[str, str, str | None, list[Migration]]] = [
        ("payments", env["TURSO_DB_URL"], env.get("TURSO_DB_AUTH_TOKEN"), payments_migrations()),
        (
            "bookings",
            env["BOOKINGS_DB_URL"],
            env.get("BOOKINGS_DB_AUTH_TOKEN"),
            bookings_migrations(),
        ),
    ]
    for name, url, token, migrations in targets:
        db = await open_database(url, token)
        try:
            applied = await migrate(db, migrations)
        finally:
            await db.close()
        say(f"{name} DB {url}: {len(applied)} migration(s) applied, schema current")


def dev_secret(name: str) -> str:
    """A secret for local runs only: generated once into var/, never printed."""
    path = VAR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def local_merchant(env: dict[str, str]) -> str:
    """The wallet the payments service is paid to, worked out as it does."""
    merchant, _fee_payer = merchant_keys(
        PaymentsSettings.load(
            environment="development",
            merchant_wallet=env.get("MERCHANT_WALLET") or None,
            solana_private_key=env.get("SOLANA_PRIVATE_KEY") or None,
        )
    )
    return merchant


async def register_helius_webhook(env: dict[str, str], gateway_url: str) -> None:
    """Point the Solana sandbox's Helius-style webhooks at our gateway, as one would in the
    Helius dashboard, watching the merchant wallet and its USDC token account."""
    merchant = local_merchant(env)
    # And its USDC token account: a token transfer names that account, not always the wallet.
    usdc_account = associated_token_address(
        Pubkey.from_string(merchant), Pubkey.from_string(env["USDC_MINT"])
    )
    body = {
        "webhookURL": gateway_url + "/api/webhooks/helius",
        "accountAddresses": [merchant, str(usdc_account)],
        "webhookType": "enhanced",
        "authHeader": env["HELIUS_WEBHOOK_SECRET"],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(env["SOLANA_RPC_URL"].rstrip("/") + "/v0/webhooks", json=body) as resp,
    ):
        if resp.status >= 300:
            say(f"could not register the Helius webhook on the sandbox: HTTP {resp.status}")
            return
    say(
        "sandbox Helius webhook → gateway /api/webhooks/helius"
        " (merchant wallet and its USDC account watched)"
    )


async def sandbox_pubsub_url(env: dict[str, str]) -> str | None:
    """Where the Solana sandbox serves PubSub: it says (RPC port + 1, unless that was taken)."""
    url = env["SOLANA_RPC_URL"].rstrip("/") + "/admin/stats"
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            stats = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    pubsub_url = stats.get("pubsub_url") if isinstance(stats, dict) else None
    return pubsub_url if isinstance(pubsub_url, str) else None


async def run_stack() -> int:
    VAR.mkdir(exist_ok=True)
    env = {key: os.environ.get(key, value) for key, value in DEFAULTS.items()}
    env["HELIUS_WEBHOOK_SECRET"] = os.environ.get("HELIUS_WEBHOOK_SECRET") or dev_secret(
        "helius-webhook-secret"
    )
    notifier_port = os.environ.get(PORT_VARS["notifier"]) or str(SERVICES["notifier"][1])
    env.setdefault(
        "NOTIFIER_URL", os.environ.get("NOTIFIER_URL", f"http://127.0.0.1:{notifier_port}")
    )
    # Every service (the verifier's `confirmed` watch too) follows the wallet payments use.
    env["MERCHANT_WALLET"] = local_merchant({**os.environ, **env})
    busy = busy_ports(env)
    for line in busy:
        say(line)
    if busy:
        return 2
    servers = ensure_infra(env)
    children: list[ChildProcess] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        await migrate_all(env)
        for name, (module, url_var) in SANDBOXES.items():
            if importlib.util.find_spec(f"{module}.__main__") is None:
                continue
            port = _host_port(env[url_var], 80)[1]
            argv = [sys.executable, "-m", module, "--port", str(port)]
            if name == "solana-sandbox" and os.environ.get("SOLANA_WS_URL"):
                argv += ["--pubsub-port", str(_host_port(os.environ["SOLANA_WS_URL"], 8900)[1])]
            child = ChildProcess(
                name=name,
                argv=argv,
                env=env,
                port=port,
                cwd=str(ROOT),
                any_http_answer=True,
            )
            await child.start()
            children.append(child)
        for name in SERVICES:
            child = service_process(name, env)
            child.cwd = str(ROOT)
            await child.start()
            children.append(child)
        await asyncio.gather(*(c.wait_healthy(30) for c in children))
        gateway = next(c for c in children if c.name == "gateway")
        pubsub_url = None
        if any(c.name == "solana-sandbox" for c in children):
            await register_helius_webhook(env, gateway.base_url)
            pubsub_url = await sandbox_pubsub_url(env)
        _print_summary(env, children, pubsub_url)
        watchers = [asyncio.create_task(c.wait()) for c in children]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = [c.name for c in children if not c.running]
            say(f"{', '.join(dead)} exited unexpectedly; stopping the stack")
            code = 1
        stopper.cancel()
    except (TimeoutError, RuntimeError) as exc:
        say(f"start-up failed: {exc}")
        code = 1
    finally:
        say("stopping what this command started")
        for child in reversed(children):
            exit_code = await child.terminate(10)
            say(f"{child.name} stopped (exit {exit_code})")
        for server in reversed(servers):
            server.stop()
            say(f"{server.name} stopped")
    return code


def _print_summary(
    env: dict[str, str], children: list[ChildProcess], pubsub_url: str | None
) -> None:
    gateway = next(c for c in children if c.name == "gateway")
    lines = ["", "AxiomID payments is up:"]
    lines.append(f"  checkout          {gateway.base_url}/")
    for child in children:
        routes = "" if child.any_http_answer else "  (/healthz /readyz /metrics)"
        lines.append(f"  {child.name:<17} {child.base_url}{routes}")
    if pubsub_url is not None:
        lines.append(f"  solana PubSub     {pubsub_url}  (WebSocket subscriptions)")
    lines.append(f"  NATS              {env['NATS_URL']}")
    lines.append(f"  Redis             {env['REDIS_URL']}")
    lines.append(f"  payments DB       {env['TURSO_DB_URL']}")
    lines.append(f"  bookings DB       {env['BOOKINGS_DB_URL']}")
    lines.append("`make demo` in another terminal pays one order end to end.")
    lines.append("Ctrl-C stops everything this command started.")
    for line in lines:
        say(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.stack")
    parser.add_argument("command", choices=["run", "demo"])
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "demo":
            return asyncio.run(run_demo())
        return asyncio.run(run_stack())
    return 130


if __name__ == "__main__":
    sys.exit(main())
