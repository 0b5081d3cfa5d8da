"""Payments II end to end: verification at finalized, Helius ingest, the reconcile loop and
exactly-once provisioning, on real NATS, libSQL and the sandbox chain."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.signature import Signature

from axiom_shared.nats import connect_nats
from axiom_shared.schemas import ChangeSource, PaymentFindings, PaymentStatusChanged
from sandbox.solana.wallet import pay_url
from tests.fixtures.solana import send_transfer
from tests.fixtures.system import PRICE, PaymentSystem, SystemFactory

pytestmark = pytest.mark.e2e


async def finalized_at(system: PaymentSystem, signature: Signature, timeout: float = 10) -> float:
    """The moment (monotonic) the sandbox reports the signature finalized."""
    async with AsyncClient(system.solana.rpc_url) as rpc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = (await rpc.get_signature_statuses([signature])).value[0]
            if status is not None and str(status.confirmation_status) in (
                "TransactionConfirmationStatus.Finalized",
                "finalized",
            ):
                return time.monotonic()
            await asyncio.sleep(0.01)
    raise AssertionError("not finalized in time")


async def status_events(system: PaymentSystem, payment_id: str) -> list[PaymentStatusChanged]:
    nc = await connect_nats(system.nats_url, "test-reader")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            f"payments.events.status.{payment_id}",
            deliver_policy=DeliverPolicy.ALL,
            ordered_consumer=True,
        )
        events = []
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            events.append(PaymentStatusChanged.from_bytes(msg.data))
        await sub.unsubscribe()
        return events
    finally:
        await nc.close()


async def provisioned_events(system: PaymentSystem, payment_id: str) -> int:
    nc = await connect_nats(system.nats_url, "test-reader")
    try:
        sub = await nc.jetstream().subscribe(
            f"payments.events.provisioned.{payment_id}",
            deliver_policy=DeliverPolicy.ALL,
            ordered_consumer=True,
        )
        count = 0
        while True:
            try:
                await sub.next_msg(timeout=0.5)
                count += 1
            except Exception:
                return count
    finally:
        await nc.close()


async def test_paid_payment_is_provisioned_within_2s_of_finalization(
    payment_system: PaymentSystem,
) -> None:
    created = await payment_system.create()
    signature = await pay_url(created["transfer_url"], payment_system.solana.rpc_url)
    final = await finalized_at(payment_system, signature)
    view = await payment_system.wait_status(created["payment_id"], "provisioned", timeout=10)
    took = time.monotonic() - final
    print(f"\nprovisioned {took:.2f} s after finalization")
    assert took < 2.0
    assert view["tx_signature"] == str(signature)
    assert view["finalized_at"] is not None
    assert view["received_lamports"] == str(PRICE)
    # pending → (seen at confirmed, when that marker won the race with finality: a version of
    # its own, same status) → verified → provisioned
    seen = view["seen_signature"] is not None
    assert view["version"] == (4 if seen else 3)
    assert view["seen_signature"] in (None, str(signature))
    assert (
        await payment_system.count(
            "SELECT count(*) FROM entitlements e JOIN payments p ON p.id = e.payment_id"
            " WHERE p.public_id = ?",
            [created["payment_id"]],
        )
        == 1
    )


async def test_reconcile_alone_provisions_when_every_webhook_is_dropped(
    payment_system: PaymentSystem,
) -> None:
    await payment_system.solana.admin.set_faults(webhook_drop_all=True)
    payer = await payment_system.payer()
    created = [await payment_system.create() for _ in range(5)]
    for payment in created:
        await payment_system.send(payer, PRICE, (payment["reference"],))
    for payment in created:
        await payment_system.wait_status(payment["payment_id"], "provisioned", timeout=15)
    stats = await payment_system.solana.admin.stats()
    assert stats["webhooks_sent"] == 0
    assert stats["webhooks_dropped"] >= 1
    assert await payment_system.count("SELECT count(*) FROM entitlements") == 5


async def test_duplicates_from_every_source_provision_exactly_once(
    payment_system: PaymentSystem,
) -> None:
    await payment_system.solana.admin.set_faults(webhook_duplicate=5)
    payer = await payment_system.payer()
    created = await payment_system.create()
    signature = await payment_system.send(payer, PRICE, (created["reference"],))
    payment_id = created["payment_id"]
    # A manual verify with and without the signature, while webhooks x5 and reconcile run.
    manual = await asyncio.gather(
        payment_system.call("POST", "/api/pay/verify", json={"payment_id": payment_id}),
        payment_system.call(
            "POST", "/api/pay/verify", json={"payment_id": payment_id, "signature": str(signature)}
        ),
    )
    assert [code for code, _ in manual] == [202, 202]
    await payment_system.wait_status(payment_id, "provisioned")
    await asyncio.sleep(1.0)  # let every duplicate arrive and be applied (or not)
    events = await status_events(payment_system, payment_id)
    moves = [e for e in events if e.previous_status != e.payment.status]
    assert [e.payment.status.value for e in moves] == ["pending", "verified", "provisioned"]
    # Besides the moves, at most the marker of the payment seen at confirmed (display only).
    assert {e.source for e in events if e not in moves} <= {ChangeSource.SEEN}
    assert await provisioned_events(payment_system, payment_id) == 1
    assert (
        await payment_system.count(
            "SELECT count(*) FROM entitlements e JOIN payments p ON p.id = e.payment_id"
            " WHERE p.public_id = ?",
            [payment_id],
        )
        == 1
    )


async def test_overpaid_is_verified_with_the_excess_recorded(
    payment_system: PaymentSystem,
) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create()
    await payment_system.send(payer, PRICE + 12_345, (created["reference"],))
    view = await payment_system.wait_status(created["payment_id"], "provisioned")
    assert view["received_lamports"] == str(PRICE + 12_345)


async def test_underpaid_stays_pending_and_a_top_up_completes_it(
    payment_system: PaymentSystem,
) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create()
    first = await payment_system.send(payer, PRICE // 2, (created["reference"],))
    view = await wait_received(payment_system, created["payment_id"], PRICE // 2)
    assert view["status"] == "pending"
    assert view["refund_due_lamports"] == "0"  # it can still be topped up
    second = await payment_system.send(payer, PRICE // 2 + 7, (created["reference"],))
    view = await payment_system.wait_status(created["payment_id"], "provisioned")
    assert view["received_lamports"] == str(PRICE + 7)
    assert view["refund_due_lamports"] == "7"
    assert view["tx_signature"] == str(second)  # the receipt that crossed the line
    receipts = await payment_system.db.fetch_all(
        "SELECT signature FROM receipts ORDER BY slot, position"
    )
    assert [r["signature"] for r in receipts] == [str(first), str(second)]
    assert await payment_system.count("SELECT count(*) FROM entitlements") == 1


async def test_paying_someone_else_is_an_observation_not_a_failure(
    payment_system: PaymentSystem,
) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create()
    elsewhere = str(Keypair().pubkey())
    signature = await payment_system.send(
        payer, PRICE, (created["reference"],), recipient=elsewhere
    )
    await wait_observation(payment_system, str(signature), "no_credit")
    view = await payment_system.status(created["payment_id"])
    assert view["status"] == "pending"
    assert view["received_lamports"] == "0"
    assert await payment_system.count("SELECT count(*) FROM entitlements") == 0


async def wait_received(system: PaymentSystem, payment_id: str, lamports: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        view = await system.status(payment_id)
        if view["received_lamports"] == str(lamports):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"received_lamports never became {lamports}: {view}")


async def wait_observation(
    system: PaymentSystem, signature: str, reason: str, payments: int = 1
) -> list[str]:
    """The public ids of the (at least `payments`) payments that recorded `signature` as an
    observation for `reason`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = await system.db.fetch_all(
            "SELECT p.public_id FROM observations o JOIN payments p ON p.id = o.payment_id"
            " WHERE o.signature = ? AND o.reason = ?",
            [signature, reason],
        )
        if len(rows) >= payments:
            return [str(r["public_id"]) for r in rows]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {reason} observation of {signature} on {payments} payment(s)")


async def wait_check(system: PaymentSystem, payment_id: str, check: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        view = await system.status(payment_id)
        if view["last_check"] == check:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"last_check never became {check}: {view}")


async def test_transaction_without_the_reference_is_not_counted(
    payment_system: PaymentSystem,
) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create()
    signature = await payment_system.send(payer, PRICE, ())  # pays the merchant, no reference
    code, _ = await payment_system.call(
        "POST",
        "/api/pay/verify",
        json={"payment_id": created["payment_id"], "signature": str(signature)},
    )
    assert code == 202
    view = await wait_check(payment_system, created["payment_id"], "no_reference")
    assert view["status"] == "pending"
    assert view["tx_signature"] is None


async def test_failed_transaction_is_not_counted(payment_system: PaymentSystem) -> None:
    payer = await payment_system.payer(lamports=50_000_000)  # less than the price
    created = await payment_system.create()
    signature = await payment_system.send(
        payer, PRICE, (created["reference"],), skip_preflight=True
    )
    code, _ = await payment_system.call(
        "POST",
        "/api/pay/verify",
        json={"payment_id": created["payment_id"], "signature": str(signature)},
    )
    assert code == 202
    await wait_observation(payment_system, str(signature), "transaction_failed")
    view = await payment_system.status(created["payment_id"])
    assert view["status"] == "pending"


async def test_unknown_signature_is_reported_not_found(payment_system: PaymentSystem) -> None:
    created = await payment_system.create()
    ghost = str(Keypair().sign_message(b"never sent"))
    code, _ = await payment_system.call(
        "POST", "/api/pay/verify", json={"payment_id": created["payment_id"], "signature": ghost}
    )
    assert code == 202
    view = await wait_check(payment_system, created["payment_id"], "transaction_not_found")
    assert view["status"] == "pending"


async def test_one_transaction_cannot_pay_two_payments(payment_system: PaymentSystem) -> None:
    payer = await payment_system.payer()
    first, second = await payment_system.create(), await payment_system.create()
    signature = await payment_system.send(payer, PRICE, (first["reference"], second["reference"]))
    named = await wait_observation(payment_system, str(signature), "ambiguous", payments=2)
    assert sorted(named) == sorted([first["payment_id"], second["payment_id"]])
    for payment in (first, second):
        view = await payment_system.status(payment["payment_id"])
        assert view["status"] == "pending"
        assert view["received_lamports"] == "0"
    assert await payment_system.count("SELECT count(*) FROM entitlements") == 0
    assert await payment_system.count("SELECT count(*) FROM receipts") == 0


async def test_confirmed_only_stays_pending_until_finalized(
    payment_system_factory: SystemFactory,
) -> None:
    system = await payment_system_factory(webhooks=False)
    payer = await system.payer()
    created = await system.create()
    await system.solana.admin.pause_clock()
    try:
        signature = await send_unconfirmed(system, payer, created["reference"])
        await system.solana.admin.advance(1)  # confirmed, not finalized
        # Helius can announce at `confirmed`: the webhook arrives before finalization.
        code, receipt = await system.call(
            "POST",
            "/api/webhooks/helius",
            json=[{"signature": str(signature), "type": "TRANSFER"}],
            headers={"Authorization": system.webhook_secret},
        )
        assert code == 200
        assert receipt["stored"] == 1
        await asyncio.sleep(1.0)
        view = await system.status(created["payment_id"])
        assert view["status"] == "pending"
        assert view["tx_signature"] is None
    finally:
        await system.solana.admin.resume_clock()
    view = await system.wait_status(created["payment_id"], "provisioned")
    assert view["tx_signature"] == str(signature)


async def send_unconfirmed(system: PaymentSystem, payer: Keypair, reference: str) -> Signature:
    from axiom_payments.settings import DEV_MERCHANT_WALLET

    async with AsyncClient(system.solana.rpc_url) as rpc:
        return await send_transfer(rpc, payer, DEV_MERCHANT_WALLET, PRICE, (reference,))


async def test_a_lying_webhook_changes_nothing(payment_system: PaymentSystem) -> None:
    await payment_system.solana.admin.set_faults(webhook_drop_all=True)
    payer = await payment_system.payer()
    created = await payment_system.create()
    signature = await payment_system.send(payer, PRICE // 10, (created["reference"],))
    forged = [
        {
            "signature": str(signature),
            "type": "TRANSFER",
            "nativeTransfers": [
                {
                    "fromUserAccount": str(payer.pubkey()),
                    "toUserAccount": created["recipient"],
                    "amount": PRICE * 10,
                }
            ],
            "accountData": [],
        }
    ]
    code, receipt = await payment_system.call(
        "POST",
        "/api/webhooks/helius",
        json=forged,
        headers={"Authorization": payment_system.webhook_secret},
    )
    assert code == 200
    assert receipt["stored"] + receipt["duplicates"] == 1
    view = await wait_received(payment_system, created["payment_id"], PRICE // 10)
    assert view["status"] == "pending"  # what the chain says, not what the body claims


@pytest.mark.parametrize("authorization", [None, "", "wrong", "Bearer x"])
async def test_webhooks_without_the_secret_are_refused(
    payment_system: PaymentSystem, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    sig = str(Keypair().sign_message(b"x"))
    code, body = await payment_system.call(
        "POST", "/api/webhooks/helius", json=[{"signature": sig}], headers=headers
    )
    assert code == 401
    assert body["error"]["code"] == "unauthorized"
    nc = await connect_nats(payment_system.nats_url, "test")
    try:
        with pytest.raises(NotFoundError):
            await nc.jetstream().get_last_msg("WEBHOOKS", f"webhooks.helius.{sig}")
    finally:
        await nc.close()


async def test_one_bad_item_does_not_drop_the_batch(payment_system: PaymentSystem) -> None:
    sigs = [str(Keypair().sign_message(bytes([i]))) for i in range(2)]
    batch = [
        {"signature": sigs[0]},
        {"signature": "not-a-signature"},
        42,
        {"transaction": {"signatures": [sigs[1]]}, "meta": {}},
        {"nothing": "here"},
    ]
    code, receipt = await payment_system.call(
        "POST",
        "/api/webhooks/helius",
        json=batch,
        headers={"Authorization": payment_system.webhook_secret},
    )
    assert code == 200
    assert receipt["received"] == 5
    assert receipt["stored"] == 2
    assert [r["index"] for r in receipt["rejected"]] == [1, 2, 4]
    code, again = await payment_system.call(
        "POST",
        "/api/webhooks/helius",
        json=batch[:1],
        headers={"Authorization": payment_system.webhook_secret},
    )
    assert again["duplicates"] == 1


async def test_webhook_secret_unset_refuses_everything(
    payment_system: PaymentSystem,
) -> None:
    from axiom_gateway.app import create_app
    from axiom_gateway.settings import GatewaySettings
    from tests.fixtures.infra import start_app

    settings = GatewaySettings.load(nats_url=payment_system.nats_url, port=0)
    gateway = await start_app(create_app(settings))
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gateway.base_url + "/api/webhooks/helius", json=[], headers={"Authorization": ""}
            ) as resp,
        ):
            assert resp.status == 401
    finally:
        await gateway.server.close()


async def test_malformed_findings_on_the_bus_move_no_money(
    payment_system_factory: SystemFactory,
) -> None:
    """Defence in depth: findings on the internal bus are applied only when they are well
    formed (a receipt credits a positive amount, ...); anything else is dead-lettered."""
    system = await payment_system_factory(
        webhooks=False, payments={"reconcile_interval_seconds": 3600}
    )
    created = await system.create()
    forged = {
        "schema": PaymentFindings.SCHEMA,
        "payment_id": created["payment_id"],
        "source": ChangeSource.WEBHOOK.value,
        "receipts": [
            {
                "signature": str(Keypair().sign_message(b"forged")),
                "slot": 1,
                "position": 0,
                "amount_lamports": "0",
                "block_time": datetime.now(UTC).isoformat(),
            }
        ],
        "observed_at": datetime.now(UTC).isoformat(),
    }
    nc = await connect_nats(system.nats_url, "test")
    try:
        js = nc.jetstream()
        dlq = await js.subscribe("dlq.VERIFICATION.payments-findings")
        await js.publish(f"verify.findings.{created['payment_id']}", json.dumps(forged).encode())
        letter = await dlq.next_msg(timeout=10)
        assert letter.headers is not None
        assert "malformed" in letter.headers["Axiom-Dead-Letter-Reason"]
    finally:
        await nc.close()
    view = await system.status(created["payment_id"])
    assert view["status"] == "pending"
    assert view["received_lamports"] == "0"
    assert await system.count("SELECT count(*) FROM receipts") == 0
