"""200 payments in flight while the verifier and the payments service are SIGKILLed and
restarted: every one is provisioned exactly once, none is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from nats.js.api import DeliverPolicy
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from axiom_payments.settings import DEV_MERCHANT_WALLET
from axiom_shared.db import open_database
from axiom_shared.nats import connect_nats
from deploy.local.processes import ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port
from tests.fixtures.solana import SolanaSandbox, airdrop, send_transfer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAYMENTS = 200
PRICE = 100_000_000
SECRET = "crash-test-helius-secret"


async def test_kills_mid_run_lose_and_repeat_nothing(
    nats_server: NatsServer,
    redis_server: RedisServer,
    solana_sandbox: SolanaSandbox,
    tmp_path: Path,
) -> None:
    db_url = f"file:{tmp_path / 'payments.db'}"
    env = {
        **nats_server.client_env(),
        "REDIS_URL": redis_server.url,
        "TURSO_DB_URL": db_url,
        "SOLANA_RPC_URL": solana_sandbox.rpc_url,
        "HELIUS_WEBHOOK_SECRET": SECRET,
        "RECONCILE_INTERVAL_SECONDS": "0.5",
        "RETRY_DELAY_SCALE": "0.05",
        "LOG_LEVEL": "WARNING",
    }
    ports = {name: free_port() for name in ("gateway", "payments", "verifier")}

    def spawn(name: str) -> ChildProcess:
        return service_process(name, env, port=ports[name], sink=quiet)

    children = {name: spawn(name) for name in ports}
    for child in children.values():
        await child.start()
    try:
        await asyncio.gather(*(c.wait_healthy(30) for c in children.values()))
        gateway = children["gateway"].base_url
        await solana_sandbox.admin.register_webhook(
            gateway + "/api/webhooks/helius", [DEV_MERCHANT_WALLET], auth_header=SECRET
        )
        payers = [Keypair() for _ in range(4)]
        for payer in payers:
            await airdrop(solana_sandbox, str(payer.pubkey()), 60_000_000_000)

        async with aiohttp.ClientSession() as http:

            async def create() -> dict[str, str]:
                async with http.post(gateway + "/api/pay/req/axiomid-pro-monthly", json={}) as resp:
                    assert resp.status == 200
                    body: dict[str, str] = await resp.json()
                    return body

            created = await asyncio.gather(*(create() for _ in range(PAYMENTS)))

        async with AsyncClient(solana_sandbox.rpc_url) as rpc:

            async def pay(index: int, payment: dict[str, str]) -> None:
                await send_transfer(
                    rpc,
                    payers[index % len(payers)],
                    DEV_MERCHANT_WALLET,
                    PRICE,
                    (payment["reference"],),
                )

            sent = 0
            for start in range(0, PAYMENTS, 25):
                await asyncio.gather(
                    *(pay(start + i, p) for i, p in enumerate(created[start : start + 25]))
                )
                sent += 25
                if sent == 50:
                    children["verifier"].kill()
                    await children["verifier"].wait()
                if sent == 100:
                    children["payments"].kill()
                    await children["payments"].wait()
                if sent == 125:
                    for name in ("verifier", "payments"):
                        children[name] = spawn(name)
                        await children[name].start()
                        await children[name].wait_healthy(30)

        db = await open_database(db_url)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                row = await db.fetch_one(
                    "SELECT count(*) AS n FROM payments WHERE status = 'provisioned'"
                )
                assert row is not None
                if row["n"] == PAYMENTS:
                    break
                await asyncio.sleep(0.5)
            states = await db.fetch_all("SELECT status, count(*) AS n FROM payments GROUP BY 1")
            assert states == [{"status": "provisioned", "n": PAYMENTS}]
            grants = await db.fetch_one(
                "SELECT count(*) AS n, count(DISTINCT payment_id) AS d FROM entitlements"
            )
            assert grants == {"n": PAYMENTS, "d": PAYMENTS}
            signed = await db.fetch_one(
                "SELECT count(DISTINCT tx_signature) AS n FROM payments"
                " WHERE tx_signature IS NOT NULL"
            )
            assert signed == {"n": PAYMENTS}
            # Every event written with its change is relayed to JetStream, then dropped here.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                outbox = await db.fetch_one("SELECT count(*) AS n FROM outbox")
                if outbox == {"n": 0}:
                    break
                await asyncio.sleep(0.2)
            assert outbox == {"n": 0}
        finally:
            await db.close()

        # Exactly one `provisioned` event per payment reached JetStream.
        nc = await connect_nats(nats_server.url, "test")
        try:
            sub = await nc.jetstream().subscribe(
                "payments.events.provisioned.>",
                deliver_policy=DeliverPolicy.ALL,
                ordered_consumer=True,
            )
            subjects: list[str] = []
            while True:
                try:
                    subjects.append((await sub.next_msg(timeout=1.0)).subject)
                except Exception:
                    break
            ours = {f"payments.events.provisioned.{p['payment_id']}" for p in created}
            mine = [s for s in subjects if s in ours]
            assert len(mine) == PAYMENTS
            assert set(mine) == ours
        finally:
            await nc.close()
    finally:
        for child in children.values():
            await child.terminate(10)
