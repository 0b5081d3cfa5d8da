"""SIGKILL of the payments service in the middle of group commits: no payment answered as
created is lost, none is half-written, and a retry with the same Idempotency-Key gets the same
payment (exactly one per key), whether or not its first answer arrived."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from axiom_shared.db import open_database
from axiom_shared.errors import ApiError
from axiom_shared.nats import connect_nats
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import CreatePaymentInput
from deploy.local.processes import ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port
from tests.fixtures.solana import SolanaSandbox

pytestmark = [pytest.mark.e2e]

ORDER = "axiomid-pro-monthly"
CONCURRENCY = 64
#: Answered creations before the kill (group commits are running at full speed by then).
KILL_AFTER = 300


async def test_sigkill_mid_group_commit_loses_and_half_applies_nothing(
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
        "LOG_LEVEL": "WARNING",
    }
    port = free_port()

    def spawn() -> ChildProcess:
        return service_process("payments", env, port=port, sink=quiet)

    payments = spawn()
    await payments.start()
    nc = await connect_nats(nats_server.url, "kill-test")
    client = PaymentsClient(nc, timeout=3.0)
    answered: dict[str, str] = {}  # idempotency key -> payment id the caller was told
    keys: list[str] = []
    stop, enough = asyncio.Event(), asyncio.Event()
    try:
        await payments.wait_healthy(30)

        async def caller() -> None:
            while not stop.is_set():
                key = uuid.uuid4().hex
                keys.append(key)
                try:
                    created = await client.create(
                        CreatePaymentInput(
                            order_id=ORDER, idempotency_key=key, idempotency_scope="kill-test"
                        )
                    )
                except ApiError:
                    continue  # no answer (the service is gone): unknown, retried below
                answered[key] = created.payment_id
                if len(answered) >= KILL_AFTER:
                    enough.set()

        callers = [asyncio.create_task(caller()) for _ in range(CONCURRENCY)]
        # Let group commits run at full speed, then kill the process in the middle of them.
        await asyncio.wait_for(enough.wait(), timeout=60)
        payments.kill()
        await payments.wait()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*callers)
        assert len(answered) >= KILL_AFTER

        # Straight after the kill, before anything repairs anything: every answered payment is
        # there whole, and no payment is there in part.
        db = await open_database(db_url)
        try:
            rows = await db.fetch_all(
                "SELECT p.public_id, k.idempotency_key,"
                " (SELECT count(*) FROM payment_events e WHERE e.payment_id = p.id) AS audit,"
                " (SELECT count(*) FROM outbox o WHERE o.subject LIKE '%' || p.public_id)"
                " AS events"
                " FROM payments p LEFT JOIN idempotency_keys k ON k.payment_id = p.id"
            )
            orphans = await db.fetch_one(
                "SELECT count(*) AS n FROM idempotency_keys k"
                " WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = k.payment_id)"
            )
        finally:
            await db.close()
        stored = {row["idempotency_key"]: row["public_id"] for row in rows}
        for key, payment_id in answered.items():
            assert stored.get(key) == payment_id, f"answered payment {payment_id} was lost"
        assert all(row["idempotency_key"] is not None for row in rows)
        assert all(row["audit"] == 1 for row in rows), "a payment without its audit row"
        # The relay may have published and dropped an event already; none can be extra.
        assert all(row["events"] <= 1 for row in rows)
        assert orphans == {"n": 0}
        unanswered_but_stored = [k for k in stored if k not in answered]

        # Restarted, a retry of every request gives one payment per key: the answered ones
        # their first payment, the unanswered ones whatever was committed, or a new one.
        payments = spawn()
        await payments.start()
        await payments.wait_healthy(30)

        async def retry(key: str) -> tuple[str, str]:
            created = await client.create(
                CreatePaymentInput(
                    order_id=ORDER, idempotency_key=key, idempotency_scope="kill-test"
                )
            )
            return key, created.payment_id

        sem = asyncio.Semaphore(CONCURRENCY)

        async def bounded(key: str) -> tuple[str, str]:
            async with sem:
                return await retry(key)

        retried = dict(await asyncio.gather(*(bounded(k) for k in keys)))
        for key, payment_id in answered.items():
            assert retried[key] == payment_id
        for key in unanswered_but_stored:
            assert retried[key] == stored[key]
        db = await open_database(db_url)
        try:
            total = await db.fetch_one("SELECT count(*) AS n FROM payments")
        finally:
            await db.close()
        assert total == {"n": len(set(keys))}
        print(
            f"\ngroup-commit kill: {len(answered)} answered before the kill,"
            f" {len(unanswered_but_stored)} committed but unanswered, {len(keys)} keys in all"
        )
    finally:
        stop.set()
        await nc.close()
        if payments.running:
            await payments.terminate()
