"""The fault suite: 300 SOL and 40 USDC payments in flight while, in turn, every service is
SIGKILLed and restarted, NATS restarts (JetStream on disk), Redis restarts, the RPC turns slow
(5 s) and unreliable (30% failures), and webhooks are dropped, duplicated x5 and reordered
throughout. Then the overpaid ones (SOL and USDC) are refunded through refund requests the
merchant's wallet signs, while payments and the verifier are SIGKILLed and NATS restarts.

Strangers who read the chain join in: junk transactions carrying live references (0 and
1 lamport, and failed ones), more than 10% of all transactions, some landing before the
buyer's payment.

Checked at the end, from the DB and the chain: every paid payment provisioned exactly once, by
the buyer's own transaction; nothing unpaid provisioned and no payment failed by a stranger;
no entitlement without a finalized transaction that pays it; every junk lamport owed back;
every refund landed and counted exactly once, for what was overpaid; and clients only ever
saw 2xx, 4xx or 503 (never a 500) while it all happened.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from nats.errors import Error as NatsError
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from axiom_shared.db import Database, open_database
from axiom_shared.errors import ApiError
from axiom_shared.nats import connect_nats
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import RequestRefundInput
from deploy.local.processes import SERVICES, ChildProcess, quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port
from sandbox.solana.tokens import SANDBOX_USDC_MINT
from sandbox.solana.wallet import sign_own_slot
from tests.fixtures.solana import SolanaSandbox, airdrop, send_token_transfer, send_transfer
from tests.fixtures.stack import restart_suite_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAID = 300
UNPAID = 20
USDC_PAID = 40
USDC_ORDER = "axiomid-pro-monthly-usdc"
USDC_PRICE = 5_000_000
#: Every OVERPAY_EVERY-th paid payment (SOL and USDC) pays this much more, then is refunded.
OVERPAY_EVERY = 10
EXTRA_LAMPORTS = 7_777_777
EXTRA_USDC = 1_250_000
#: Junk transactions per honest one (0.2 → junk is 1/6 of all transactions).
JUNK_RATE = 0.2
PRICE = 100_000_000
SECRET = "fault-suite-helius-secret"


@pytest.mark.timeout(600)
async def test_300_payments_survive_every_fault(
    own_nats: NatsServer, solana_sandbox: SolanaSandbox, tmp_path: Path
) -> None:
    redis = RedisServer()
    redis.start()
    # The merchant's wallet is the test's: it signs the refunds, as the merchant's own would.
    merchant = Keypair()
    merchant_wallet = str(merchant.pubkey())
    env = {
        "MERCHANT_WALLET": merchant_wallet,
        "USDC_MINT": str(SANDBOX_USDC_MINT),
        **restart_suite_env(own_nats, redis, solana_sandbox, tmp_path, SECRET),
    }
    ports = {name: free_port() for name in SERVICES}
    env["NOTIFIER_URL"] = f"http://127.0.0.1:{ports['notifier']}"

    def spawn(name: str) -> ChildProcess:
        return service_process(name, env, port=ports[name], sink=quiet)

    children = {name: spawn(name) for name in SERVICES}
    statuses: Counter[int] = Counter()
    stop_clients = asyncio.Event()
    try:
        for child in children.values():
            await child.start()
        await asyncio.gather(*(c.wait_healthy(30) for c in children.values()))
        gateway = children["gateway"].base_url
        await solana_sandbox.admin.register_webhook(
            gateway + "/api/webhooks/helius", [merchant_wallet], auth_header=SECRET
        )
        await solana_sandbox.admin.set_faults(
            webhook_drop_probability=0.3, webhook_duplicate=5, webhook_reorder=True, seed=7
        )
        payers = [Keypair() for _ in range(6)]
        for payer in payers:
            await airdrop(solana_sandbox, str(payer.pubkey()), 10_000_000_000)
            solana_sandbox.chain.mint_tokens(payer.pubkey(), 1_000 * USDC_PRICE)
        await airdrop(solana_sandbox, merchant_wallet, 10_000_000_000)  # refund fees

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def create(order: str = "axiomid-pro-monthly") -> dict[str, str]:
                # A client retries a 503 (a dependency restarting), as it is told to.
                while True:
                    try:
                        async with http.post(gateway + f"/api/pay/req/{order}", json={}) as resp:
                            statuses[resp.status] += 1
                            if resp.status == 200:
                                body: dict[str, str] = await resp.json()
                                return body
                    except (aiohttp.ClientError, TimeoutError):
                        statuses[0] += 1  # connection refused while the gateway restarts
                    await asyncio.sleep(0.2)

            created = await asyncio.gather(*(create() for _ in range(PAID + UNPAID)))
            paid, unpaid = created[:PAID], created[PAID:]
            usdc = await asyncio.gather(*(create(USDC_ORDER) for _ in range(USDC_PAID)))
            created = [*created, *usdc]
            # What each overpaid payment paid beyond its price (and will be refunded).
            overpaid = {p["payment_id"]: EXTRA_LAMPORTS for p in paid[::OVERPAY_EVERY]} | {
                p["payment_id"]: EXTRA_USDC for p in usdc[::OVERPAY_EVERY]
            }

            async def clients() -> None:
                """Browsers polling check-status throughout: what do they ever see?"""
                while not stop_clients.is_set():
                    payment = random.choice(created)
                    try:
                        async with http.get(
                            f"{gateway}/api/pay/check-status/{payment['payment_id']}"
                        ) as resp:
                            statuses[resp.status] += 1
                    except (aiohttp.ClientError, TimeoutError):
                        statuses[0] += 1
                    await asyncio.sleep(0.02)

            pollers = [asyncio.create_task(clients()) for _ in range(4)]

            attacker, poor = Keypair(), Keypair()
            await airdrop(solana_sandbox, str(attacker.pubkey()), 10_000_000_000)
            await airdrop(solana_sandbox, str(poor.pubkey()), 100_000_000)  # fees only
            chooser = random.Random(5)
            honest: dict[str, Signature] = {}
            junk: Counter[str] = Counter()
            junk_lamports: Counter[str] = Counter()

            async with AsyncClient(solana_sandbox.rpc_url) as rpc:

                async def send_junk(payment: dict[str, str]) -> None:
                    """A stranger who read the reference on chain: 0 or 1 lamport, or a
                    transaction that fails (fee paid, nothing moved)."""
                    kind = chooser.choice(["zero", "one", "failed"])
                    payer, lamports = {
                        "zero": (attacker, 0),
                        "one": (attacker, 1),
                        "failed": (poor, 10_000_000_000),
                    }[kind]
                    await send_transfer(
                        rpc,
                        payer,
                        merchant_wallet,
                        lamports,
                        (payment["reference"],),
                        skip_preflight=True,
                    )
                    junk[kind] += 1
                    if kind == "one":
                        junk_lamports[payment["payment_id"]] += 1

                async def pay(index: int, payment: dict[str, str]) -> None:
                    stranger = chooser.random() < JUNK_RATE
                    if stranger and chooser.random() < 0.5:
                        await send_junk(payment)  # before the buyer's payment
                    honest[payment["payment_id"]] = await send_transfer(
                        rpc,
                        payers[index % len(payers)],
                        merchant_wallet,
                        PRICE + overpaid.get(payment["payment_id"], 0),
                        (payment["reference"],),
                    )
                    if stranger and payment["payment_id"] not in junk_lamports:
                        await send_junk(payment)

                async def pay_usdc(index: int, payment: dict[str, str]) -> None:
                    honest[payment["payment_id"]] = await send_token_transfer(
                        rpc,
                        payers[index % len(payers)],
                        merchant_wallet,
                        USDC_PRICE + overpaid.get(payment["payment_id"], 0),
                        (payment["reference"],),
                    )

                async def restart(name: str) -> None:
                    children[name].kill()
                    await children[name].wait()
                    children[name] = spawn(name)
                    await children[name].start()
                    await children[name].wait_healthy(30)

                async def slow_and_failing_rpc() -> None:
                    # Verification of the batch just paid waits; it never guesses.
                    await solana_sandbox.admin.set_faults(
                        rpc_latency_seconds=5.0, rpc_failure_probability=0.3, seed=11
                    )
                    await asyncio.sleep(8)
                    await solana_sandbox.admin.set_faults(
                        rpc_latency_seconds=0.0, rpc_failure_probability=0.0
                    )

                faults: list[Callable[[], Awaitable[object]]] = [
                    partial(restart, "gateway"),
                    partial(restart, "payments"),
                    partial(restart, "verifier"),
                    partial(restart, "notifier"),
                    partial(restart, "amadeus-proxy"),
                    partial(asyncio.to_thread, own_nats.restart),
                    partial(asyncio.to_thread, redis.restart),
                    slow_and_failing_rpc,
                ]
                batch = -(-PAID // len(faults))
                usdc_batch = -(-USDC_PAID // len(faults))
                for index, fault in enumerate(faults):
                    chunk = paid[index * batch : (index + 1) * batch]
                    usdc_chunk = usdc[index * usdc_batch : (index + 1) * usdc_batch]
                    await asyncio.gather(
                        *(pay(index * batch + i, p) for i, p in enumerate(chunk)),
                        *(pay_usdc(index + i, p) for i, p in enumerate(usdc_chunk)),
                    )
                    # Unpaid payments get junk too: it must never complete or fail them.
                    for payment in unpaid[index :: len(faults)]:
                        await send_junk(payment)
                    await fault()
                    await asyncio.sleep(0.3)
                share = junk.total() / (junk.total() + PAID)
                print(f"\njunk transactions: {dict(junk)}, {share:.0%} of all transactions")
                assert share >= 0.10

            db = await open_database(env["TURSO_DB_URL"])
            try:
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    row = await db.fetch_one(
                        "SELECT count(*) AS n FROM payments WHERE status = 'provisioned'"
                    )
                    assert row is not None
                    if row["n"] >= PAID + USDC_PAID:
                        break
                    await asyncio.sleep(1.0)
                stop_clients.set()
                await asyncio.gather(*pollers)

                # Every paid payment provisioned exactly once.
                paid_ids = [p["payment_id"] for p in paid]
                marks = ", ".join("?" for _ in paid_ids)
                query = (
                    f"SELECT public_id, status, tx_signature, reference_key, received_lamports,"  # noqa: S608
                    f" refund_due_lamports FROM payments WHERE public_id IN ({marks})"
                )
                # The junk that landed after a payment was provisioned (its webhook maybe
                # dropped) is found by the reconcile loop, which watches finished payments for
                # the lookback: wait for every junk lamport to be seen.
                deadline = time.monotonic() + 60
                while True:
                    rows = await db.fetch_all(query, paid_ids)
                    seen = sum(int(r["refund_due_lamports"]) for r in rows) - sum(
                        overpaid.get(str(r["public_id"]), 0) for r in rows
                    )
                    observed = await db.fetch_one("SELECT count(*) AS n FROM observations")
                    assert observed is not None
                    expected = junk["zero"] + junk["failed"]
                    if (seen == junk_lamports.total() and observed["n"] >= expected) or (
                        time.monotonic() > deadline
                    ):
                        break
                    await asyncio.sleep(1.0)
                assert Counter(r["status"] for r in rows) == {"provisioned": PAID}
                for row in rows:
                    # Paid by the buyer's own transaction; a stranger's lamport is owed back.
                    assert row["tx_signature"] == str(honest[row["public_id"]]), row
                    extra = junk_lamports[row["public_id"]] + overpaid.get(row["public_id"], 0)
                    assert row["received_lamports"] == PRICE + extra, row
                    assert row["refund_due_lamports"] == extra, row
                # Every USDC payment too, by the buyer's own token transfer, in base units.
                usdc_ids = [p["payment_id"] for p in usdc]
                marks = ", ".join("?" for _ in usdc_ids)
                usdc_rows = await db.fetch_all(
                    f"SELECT public_id, status, tx_signature, currency, received_lamports,"  # noqa: S608
                    f" refund_due_lamports FROM payments WHERE public_id IN ({marks})",
                    usdc_ids,
                )
                for row in usdc_rows:
                    extra = overpaid.get(row["public_id"], 0)
                    assert row["status"] == "provisioned", row
                    assert row["currency"] == "USDC", row
                    assert row["tx_signature"] == str(honest[row["public_id"]]), row
                    assert row["received_lamports"] == USDC_PRICE + extra, row
                    assert row["refund_due_lamports"] == extra, row
                grants = await db.fetch_one(
                    "SELECT count(*) AS n, count(DISTINCT payment_id) AS d FROM entitlements"
                )
                assert grants == {"n": PAID + USDC_PAID, "d": PAID + USDC_PAID}
                # Nothing unpaid provisioned.
                unpaid_ids = [p["payment_id"] for p in unpaid]
                marks = ", ".join("?" for _ in unpaid_ids)
                left = await db.fetch_all(
                    f"SELECT status FROM payments WHERE public_id IN ({marks})",  # noqa: S608
                    unpaid_ids,
                )
                assert {r["status"] for r in left} <= {"pending", "expired"}
                failed = await db.fetch_one(
                    "SELECT count(*) AS n FROM payments WHERE status = 'failed'"
                )
                assert failed == {"n": 0}  # nobody's payment failed by a stranger
                assert observed["n"] >= junk["zero"] + junk["failed"]  # every junk recorded
                # No entitlement without a finalized transaction that pays it.
                async with AsyncClient(solana_sandbox.rpc_url) as rpc:
                    for row in rows:
                        found = await rpc.get_transaction(
                            Signature.from_string(row["tx_signature"]),
                            commitment=Finalized,
                            max_supported_transaction_version=0,
                        )
                        assert found.value is not None, row
                        meta = found.value.transaction.meta
                        assert meta is not None
                        assert meta.err is None
                        assert int(row["received_lamports"]) >= PRICE

                # Refunds of every overpayment, while the services and NATS go down in turn.
                stop_clients.clear()
                pollers = [asyncio.create_task(clients()) for _ in range(2)]
                await refund_all(
                    own_nats,
                    solana_sandbox,
                    db,
                    merchant,
                    overpaid,
                    [
                        partial(restart, "payments"),
                        partial(restart, "verifier"),
                        partial(asyncio.to_thread, own_nats.restart),
                        partial(restart, "gateway"),
                    ],
                )
                stop_clients.set()
                await asyncio.gather(*pollers)
            finally:
                await db.close()
    finally:
        stop_clients.set()
        for child in children.values():
            await child.terminate(10)
        redis.cleanup()
    print(f"\nclient answers during the faults: {dict(sorted(statuses.items()))}")
    assert statuses[500] == 0
    assert set(statuses) <= {0, 200, 202, 404, 429, 503}, statuses


async def refund_all(
    nats: NatsServer,
    sandbox: SolanaSandbox,
    db: Database,
    merchant: Keypair,
    overpaid: dict[str, int],
    faults: list[Callable[[], Awaitable[object]]],
) -> None:
    """An operator asks for a refund of each overpayment (the payments service over NATS),
    and the merchant's wallet signs each refund request's transaction, while `faults` strike
    one after another. Each refund must land and be counted exactly once."""
    nc = await connect_nats(nats.url, "fault-suite-operator")
    client = PaymentsClient(nc, 5.0)
    try:

        async def ask(payment_id: str) -> tuple[str, str | None]:
            while True:
                try:
                    result = await client.request_refund(
                        RequestRefundInput(
                            payment_id=payment_id,
                            amount=overpaid[payment_id],
                            requested_by="fault-suite",
                        )
                    )
                    return result.refund.refund_id, result.transaction
                except ApiError as err:
                    if err.status == 409:  # asked before a restart ate the answer
                        row = await db.fetch_one(
                            "SELECT r.public_id FROM refunds r JOIN payments p"
                            " ON p.id = r.payment_id WHERE p.public_id = ?",
                            [payment_id],
                        )
                        assert row is not None
                        return str(row["public_id"]), None
                    if err.status != 503:
                        raise
                except (TimeoutError, OSError, NatsError):
                    pass  # NATS is restarting
                await asyncio.sleep(0.3)

        async def fresh(refund_id: str) -> str | None:
            while True:
                try:
                    return (await client.refund(refund_id)).transaction
                except ApiError as err:
                    if err.status != 503:
                        raise
                except (TimeoutError, OSError, NatsError):
                    pass
                await asyncio.sleep(0.3)

        async def refund(payment_id: str) -> None:
            refund_id, transaction = await ask(payment_id)
            sent: list[Signature] = []
            async with AsyncClient(sandbox.rpc_url) as rpc:
                while True:
                    if sent:
                        # Never sign a second transfer while the first may still land.
                        status = (await rpc.get_signature_statuses(sent)).value
                        if any(s is not None and s.err is None for s in status):
                            return
                    if transaction is None:
                        transaction = await fresh(refund_id)
                        if transaction is None:
                            return  # closed: landed
                    unsigned = VersionedTransaction.from_bytes(base64.b64decode(transaction))
                    tx = sign_own_slot(unsigned, merchant)
                    try:
                        sent.append((await rpc.send_raw_transaction(bytes(tx))).value)
                        await rpc.confirm_transaction(sent[-1], Confirmed, sleep_seconds=0.05)
                        return
                    except Exception:
                        transaction = None
                        await asyncio.sleep(0.3)

        async def strike() -> None:
            for fault in faults:
                await asyncio.sleep(0.5)
                await fault()

        await asyncio.gather(strike(), *(refund(pid) for pid in overpaid))
        deadline = time.monotonic() + 120
        marks = ", ".join("?" for _ in overpaid)
        while True:
            done = await db.fetch_one(
                "SELECT count(*) AS n FROM refunds r JOIN payments p ON p.id = r.payment_id"  # noqa: S608
                f" WHERE r.status = 'refunded' AND p.public_id IN ({marks})",
                list(overpaid),
            )
            assert done is not None
            if done["n"] == len(overpaid) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(3.0)  # late duplicates of every webhook and reconcile pass
        rows = await db.fetch_all(
            "SELECT p.public_id, p.refunded_lamports, p.refund_status, r.amount, r.status,"  # noqa: S608
            " (SELECT count(*) FROM payment_events e WHERE e.payment_id = p.id"
            "  AND e.reason LIKE 'refund % landed:%') AS landings,"
            " (SELECT count(*) FROM refunds x WHERE x.payment_id = p.id) AS asked"
            " FROM payments p JOIN refunds r ON r.payment_id = p.id"
            f" WHERE p.public_id IN ({marks})",
            list(overpaid),
        )
        assert len(rows) == len(overpaid)
        for row in rows:
            amount = overpaid[row["public_id"]]
            assert row["status"] == "refunded", row
            assert (row["amount"], row["refunded_lamports"]) == (amount, amount), row
            assert (row["landings"], row["asked"]) == (1, 1), row
        print(f"\nrefunded {len(rows)} overpayments (SOL and USDC) once each")
    finally:
        await nc.close()
