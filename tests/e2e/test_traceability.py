"""Logs you can follow and trust: one correlation id follows a payment through the services'
logs (carried in NATS headers, stored with the payment for the work done later), and no
secret value ever appears in any log line or error body, with every secret set."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from solders.keypair import Keypair

from deploy.local.processes import SERVICES, ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port
from sandbox.solana.wallet import pay_url
from tests.fixtures.amadeus import AmadeusSandbox
from tests.fixtures.solana import SolanaSandbox, airdrop

pytestmark = pytest.mark.e2e


def records(child: ChildProcess) -> list[dict[str, Any]]:
    parsed = []
    for line in child.lines:
        line = line.strip()
        if line.startswith("{"):
            parsed.append(json.loads(line))
    return parsed


async def test_one_id_follows_a_payment_and_no_secret_is_logged(
    nats_server: NatsServer,
    redis_server: RedisServer,
    solana_sandbox: SolanaSandbox,
    amadeus_sandbox: AmadeusSandbox,
    tmp_path: Path,
) -> None:
    merchant = Keypair()
    secrets = {
        "HELIUS_WEBHOOK_SECRET": "helius-" + uuid.uuid4().hex,
        "HELIUS_WEBHOOK_SECRET_NEXT": "helius-next-" + uuid.uuid4().hex,
        "PAYMOB_HMAC_SECRET": "paymob-" + uuid.uuid4().hex,
        "ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
        "TURSO_DB_AUTH_TOKEN": "turso-" + uuid.uuid4().hex,
        "BOOKINGS_DB_AUTH_TOKEN": "bookings-" + uuid.uuid4().hex,
        "SOLANA_PRIVATE_KEY": str(merchant),
    }
    env = {
        **nats_server.client_env(),
        "REDIS_URL": redis_server.url,
        "TURSO_DB_URL": f"file:{tmp_path / 'payments.db'}",
        "BOOKINGS_DB_URL": f"file:{tmp_path / 'bookings.db'}",
        "SOLANA_RPC_URL": solana_sandbox.rpc_url,
        "AMADEUS_BASE_URL": amadeus_sandbox.base_url,
        "AMADEUS_CLIENT_ID": amadeus_sandbox.client_id,
        "AMADEUS_CLIENT_SECRET": amadeus_sandbox.client_secret,
        "RECONCILE_INTERVAL_SECONDS": "0.5",
        "LOG_LEVEL": "DEBUG",
        **secrets,
    }
    ports = {name: free_port() for name in SERVICES}
    env["NOTIFIER_URL"] = f"http://127.0.0.1:{ports['notifier']}"
    children = {name: service_process(name, env, port=ports[name], sink=quiet) for name in SERVICES}
    for child in children.values():
        await child.start()
    try:
        await asyncio.gather(*(c.wait_healthy(30) for c in children.values()))
        gateway = children["gateway"].base_url
        await solana_sandbox.admin.register_webhook(
            gateway + "/api/webhooks/helius",
            [str(merchant.pubkey())],
            auth_header=secrets["HELIUS_WEBHOOK_SECRET"],
        )
        await airdrop(solana_sandbox, str(merchant.pubkey()), 1_000_000_000)
        trace = "trace-" + uuid.uuid4().hex
        headers = {"X-Correlation-ID": trace}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gateway + "/api/pay/req/axiomid-pro-monthly", json={}, headers=headers
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Correlation-ID"] == trace
                created = await resp.json()
            payment_id = created["payment_id"]
            stream = await http.get(
                f"{gateway}/api/sse/payment-status/{payment_id}", headers=headers
            )
            await pay_url(created["transfer_url"], solana_sandbox.rpc_url)
            seen: list[str] = []
            async with asyncio.timeout(20):
                async for raw in stream.content:
                    line = raw.decode()
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:])["status"])
                        if seen[-1] == "provisioned":
                            break
            stream.close()
            # The same checkout also searches flights: the id reaches the amadeus-proxy too.
            search = {
                "originLocationCode": "CAI",
                "destinationLocationCode": "DXB",
                "departureDate": "2027-03-01",
                "adults": 1,
            }
            async with http.post(
                gateway + "/api/proxy/amadeus/search", json=search, headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
            # Errors say nothing secret either.
            async with http.post(
                gateway + "/api/webhooks/helius",
                json=[],
                headers={"Authorization": secrets["HELIUS_WEBHOOK_SECRET"][:-1]},
            ) as resp:
                assert resp.status == 401
                body = await resp.text()
        assert seen[-1] == "provisioned"
        await asyncio.sleep(1.0)  # let the last log lines arrive
    finally:
        for child in children.values():
            await child.terminate(10)

    logs = {name: records(child) for name, child in children.items()}
    # 1. The id is in the logs of every service the payment went through...
    for name in ("gateway", "payments", "verifier", "notifier", "amadeus-proxy"):
        assert any(r.get("correlation_id") == trace for r in logs[name]), name
    # ...and every line that names the payment carries it.
    about_payment = [
        (name, r) for name, rs in logs.items() for r in rs if r.get("payment_id") == payment_id
    ]
    assert {name for name, _ in about_payment} >= {"payments", "verifier", "notifier"}
    assert all(r.get("correlation_id") == trace for _, r in about_payment), [
        (n, r) for n, r in about_payment if r.get("correlation_id") != trace
    ]
    events = [r["event"] for _, r in about_payment]
    assert "payment created" in events
    assert "findings" in events
    assert "status change fanned out" in events

    # 2. No secret value anywhere in any service's output, nor in the error body.
    everything = "".join(line for child in children.values() for line in child.lines)
    assert len(everything) > 10_000
    for name, value in secrets.items():
        assert value not in everything, name
        assert value not in body, name
