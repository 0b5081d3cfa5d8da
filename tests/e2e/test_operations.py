"""Operations: the audit trail, the operator CLI, dead-letter replay and webhook secret
rotation, on the real payment path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.settings import GatewaySettings
from axiom_payments.settings import DEV_MERCHANT_WALLET
from axiom_shared.db import IntegrityError
from axiom_shared.nats import connect_nats
from axiom_shared.schemas import ChangeSource, VerificationRequested
from tests.fixtures.infra import start_app
from tests.fixtures.system import PRICE, PaymentSystem, SystemFactory

pytestmark = pytest.mark.e2e


async def ops(system: PaymentSystem, *args: str) -> tuple[int, Any, str]:
    """Run the installed operator CLI against the system's DB and NATS."""
    env = {
        **os.environ,
        "TURSO_DB_URL": system.db.url,
        "NATS_URL": system.nats_url,
        # The operator's own NATS user: what payments may do, plus the dead letters.
        "NATS_USER": "axiom-ops",
        "NATS_PASSWORD_FILE": str(system.nats_server.password_file("axiom-ops")),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "axiom_payments.ops", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    text = stdout.decode()
    return proc.returncode or 0, json.loads(text) if text.strip() else None, stderr.decode()


async def test_audit_trail_after_redeliveries_shown_by_the_cli(
    payment_system: PaymentSystem,
) -> None:
    await payment_system.solana.admin.set_faults(webhook_duplicate=3)
    payer = await payment_system.payer()
    created = await payment_system.create()
    signature = await payment_system.send(payer, PRICE, (created["reference"],))
    await payment_system.call(
        "POST",
        "/api/pay/verify",
        json={"payment_id": created["payment_id"], "signature": str(signature)},
    )
    await payment_system.wait_status(created["payment_id"], "provisioned")
    await asyncio.sleep(1.0)  # every duplicate and the reconcile scans have had their turn

    code, shown, err = await ops(payment_system, "payments", "show", created["payment_id"])
    assert code == 0, err
    # Besides the moves, the trail may show the payment seen at confirmed (display only, a
    # version of its own with the status unchanged).
    seen = [
        e for e in shown["audit_trail"] if e["source"] == "seen" and e["to_status"] == "pending"
    ]
    assert [(e["from_status"], e["to_status"]) for e in seen] in ([], [("pending", "pending")])
    trail = [e for e in shown["audit_trail"] if e not in seen]
    assert [(e["from_status"], e["to_status"]) for e in trail] == [
        (None, "pending"),
        ("pending", "verified"),
        ("verified", "provisioned"),
    ]
    assert [e["version"] for e in shown["audit_trail"]] == list(
        range(1, len(shown["audit_trail"]) + 1)
    )
    assert trail[0]["source"] == "creation"
    assert trail[1]["source"] in ("webhook", "manual", "reconcile", "seen")
    assert trail[2]["source"] == "fulfilment"
    assert all(e["correlation_id"] for e in trail)
    assert shown["payment"]["tx_signature"] == str(signature)
    actions = await payment_system.db.fetch_all(
        "SELECT action, target, actor FROM operator_actions"
    )
    assert {"action": "payments.show", "target": created["payment_id"]}.items() <= actions[
        -1
    ].items()

    # Append-only: the trail cannot be rewritten.
    with pytest.raises(IntegrityError, match="append-only"):
        await payment_system.db.execute("UPDATE payment_events SET reason = 'x'")
    with pytest.raises(IntegrityError, match="append-only"):
        await payment_system.db.execute("DELETE FROM payment_events")


async def test_operator_expires_and_reverifies_by_hand(payment_system: PaymentSystem) -> None:
    created = await payment_system.create()
    code, listed, _ = await ops(payment_system, "payments", "list", "--status", "pending")
    assert code == 0
    assert created["payment_id"] in [p["payment_id"] for p in listed]
    code, expired, err = await ops(payment_system, "payments", "expire", created["payment_id"])
    assert code == 0, err
    assert expired["status"] == "expired"
    view = await payment_system.status(created["payment_id"])
    assert view["status"] == "expired"
    code, _, _ = await ops(payment_system, "payments", "expire", created["payment_id"])
    assert code == 1  # not pending any more: nothing changed
    code, queued, _ = await ops(payment_system, "payments", "reverify", created["payment_id"])
    assert code == 0
    assert queued == {"queued": True, "payment_id": created["payment_id"]}
    rows = await payment_system.db.fetch_all(
        "SELECT e.to_status, e.source, e.reason FROM payment_events e"
        " JOIN payments p ON p.id = e.payment_id WHERE p.public_id = ? ORDER BY e.id",
        [created["payment_id"]],
    )
    assert rows[-1] == {
        "to_status": "expired",
        "source": "operator",
        "reason": "expired by an operator",
    }
    actions = [
        r["action"]
        for r in await payment_system.db.fetch_all(
            "SELECT action FROM operator_actions WHERE target = ? ORDER BY id",
            [created["payment_id"]],
        )
    ]
    assert actions == ["payments.expire", "payments.expire", "payments.reverify"]


async def test_replayed_dead_letter_gets_the_work_done(
    payment_system_factory: SystemFactory,
) -> None:
    # Only webhooks and manual hints could verify here: no reconcile loop, no webhooks, no
    # `confirmed` watch (whose seen markers are read again at finalized).
    system = await payment_system_factory(
        webhooks=False,
        payments={"reconcile_interval_seconds": 3600},
        verifier={"seen_watch": False},
    )
    payer = await system.payer()
    created = await system.create()
    await system.send(payer, PRICE, (created["reference"],))
    await asyncio.sleep(0.5)
    assert (await system.status(created["payment_id"]))["status"] == "pending"

    # A candidate that a consumer gave up on earlier (e.g. while payments was down).
    nc = await connect_nats(system.nats_url, "test")
    try:
        candidate = VerificationRequested(
            source=ChangeSource.MANUAL, payment_id=created["payment_id"]
        )
        await nc.jetstream().publish(
            "dlq.VERIFICATION.verifier-candidates",
            candidate.to_bytes(),
            headers={
                "Axiom-Dead-Letter-Reason": "gave up after 10 deliveries: payments unavailable",
                "Axiom-Original-Subject": f"verify.candidates.manual.{created['payment_id']}",
                "Nats-Msg-Id": f"test-dlq-{created['payment_id']}",
            },
        )
    finally:
        await nc.close()
    code, letters, _ = await ops(system, "dlq", "list", "--consumer", "verifier-candidates")
    assert code == 0
    ours = [d for d in letters if d["original_subject"].endswith(created["payment_id"])]
    assert len(ours) == 1
    assert ours[0]["reason"].startswith("gave up")
    code, replayed, err = await ops(system, "dlq", "replay", "--consumer", "verifier-candidates")
    assert code == 0, err
    assert replayed["replayed"] >= 1
    await system.wait_status(created["payment_id"], "provisioned")
    code, letters, _ = await ops(system, "dlq", "list", "--consumer", "verifier-candidates")
    assert not [d for d in letters if d["original_subject"].endswith(created["payment_id"])]
    rows = await system.db.fetch_all(
        "SELECT action FROM operator_actions WHERE action = 'dlq.replay'"
    )
    assert rows


async def test_rotated_webhook_secret_loses_no_webhook(
    payment_system_factory: SystemFactory, tmp_path: Path
) -> None:
    """Helius's authHeader changes old → new: the gateway accepts both while the provider
    switches, then the old one is removed. Every payment is provisioned from webhooks alone."""
    system = await payment_system_factory(
        webhooks=False, payments={"reconcile_interval_seconds": 3600}
    )
    old, new = "old-" + "a" * 24, "new-" + "b" * 24

    async def gateway_with(current: str, following: str | None) -> str:
        settings = GatewaySettings.load(
            nats_url=system.nats_url,
            redis_url="redis://127.0.0.1:1/0",
            port=0,
            helius_webhook_secret=current,
            helius_webhook_secret_next=following,
        )
        running = await start_app(create_gateway(settings))
        opened.append(running)
        return running.base_url

    async def point_helius(url: str, secret: str) -> None:
        for hook in await system.solana.admin.list_webhooks():
            await system.solana.admin.delete_webhook(hook["webhookID"])
        await system.solana.admin.register_webhook(
            url + "/api/webhooks/helius", [DEV_MERCHANT_WALLET], auth_header=secret
        )

    async def pay_one() -> str:
        payer = await system.payer()
        created = await system.create()
        await system.send(payer, PRICE, (created["reference"],))
        return str(created["payment_id"])

    opened: list[Any] = []
    try:
        both = await gateway_with(old, new)
        await point_helius(both, old)  # 1. provider still sends the old secret
        first = await pay_one()
        await point_helius(both, new)  # 2. provider switched
        second = await pay_one()
        only_new = await gateway_with(new, None)  # 3. old secret removed
        await point_helius(only_new, new)
        third = await pay_one()
        for payment_id in (first, second, third):
            await system.wait_status(payment_id, "provisioned", timeout=15)
        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                only_new + "/api/webhooks/helius", json=[], headers={"Authorization": old}
            ) as resp,
        ):
            assert resp.status == 401
        stats = await system.solana.admin.stats()
        assert stats["webhooks_failed"] == 0  # none given up: nothing lost in the rotation
        assert stats["webhooks_sent"] >= 3
    finally:
        for running in opened:
            await running.server.close()
