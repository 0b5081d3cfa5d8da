"""The money path, tried as strangers would (issue "Payments III"): each finding is a test
against the services as real processes, the Solana sandbox's chain and its Helius webhooks.

The stack runs as production would: ENVIRONMENT=production, an explicit MERCHANT_WALLET and
a separate fee-payer key (SOLANA_PRIVATE_KEY, what a key rotation leaves), the default payment
rate limits, and the gateway behind a trusted proxy at 127.0.0.1, so each test speaks as as
many distinct clients (X-Forwarded-For) as it needs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from solders.keypair import Keypair

from deploy.local.processes import quiet, service_process
from sandbox.infra import NatsServer, RedisServer, free_port
from tests.fixtures.solana import SolanaSandbox
from tests.fixtures.stack import (
    ORDER,
    PAYMENTS_PER_CLIENT,
    PRICE,
    REQUESTS_PER_ACCOUNT,
    SOL,
    StackFactory,
    service_env,
)

pytestmark = pytest.mark.e2e

# --- 1. free goods --------------------------------------------------------------------------


async def test_the_merchants_own_keys_are_never_a_payer(attack_stack: StackFactory) -> None:
    """Finding 1: with `account` = the fee payer, its one signature would also authorise the
    transfer: a fully signed transaction paying the order with the merchant's money."""
    stack = await attack_stack()
    before = await stack.balance(stack.fee_payer.pubkey())
    for account in (stack.fee_payer.pubkey(), stack.merchant.pubkey()):
        code, body, _ = await stack.call(
            "POST",
            f"/api/pay/req/{ORDER}",
            client=stack.client(),
            json={"account": str(account)},
        )
        assert code == 422, body
        assert body["error"]["code"] == "account_not_allowed"
        assert body["error"]["details"][0]["field"] == "account"
    assert await stack.count("SELECT count(*) FROM payments") == 0
    assert await stack.balance(stack.fee_payer.pubkey()) == before


# --- 2. anyone who reads the chain cannot fail someone else's payment -----------------------


async def test_junk_carrying_a_live_reference_cannot_fail_the_payment(
    attack_stack: StackFactory,
) -> None:
    """Finding 2: a 0-lamport and a 1-lamport transaction carrying the buyer's (public)
    reference, landing before the buyer's full payment, used to fail it for good."""
    stack = await attack_stack()
    created = await stack.create()
    attacker, buyer = await stack.payer(), await stack.payer()
    zero = await stack.send(attacker, 0, created["reference"])
    one = await stack.send(attacker, 1, created["reference"])
    paid = await stack.send(buyer, PRICE, created["reference"])
    view = await stack.wait(created["payment_id"], lambda v: v["status"] == "provisioned")
    assert view["tx_signature"] == str(paid)
    assert view["received_lamports"] == str(PRICE + 1)
    assert view["refund_due_lamports"] == "1"  # the attacker's lamport is owed back
    deadline = time.monotonic() + 10
    while (str(zero), "no_credit") not in await stack.observations(created["payment_id"]):
        assert time.monotonic() < deadline, await stack.observations(created["payment_id"])
        await asyncio.sleep(0.1)
    receipts = await stack.db.fetch_all("SELECT signature FROM receipts ORDER BY slot, position")
    assert [r["signature"] for r in receipts] == [str(one), str(paid)]
    assert await stack.count("SELECT count(*) FROM entitlements") == 1


# --- 3. reconcile starvation ----------------------------------------------------------------


async def test_one_client_cannot_create_payments_without_end(attack_stack: StackFactory) -> None:
    """Finding 3, first half: payment creation was not rate limited."""
    stack = await attack_stack(webhooks=False)
    one_client = stack.client()
    codes = [
        (await stack.call("POST", f"/api/pay/req/{ORDER}", client=one_client, json={}))[0]
        for _ in range(PAYMENTS_PER_CLIENT + 5)
    ]
    assert codes.count(200) == PAYMENTS_PER_CLIENT
    assert codes.count(429) == 5
    assert await stack.count("SELECT count(*) FROM payments") == PAYMENTS_PER_CLIENT
    # Another client is not held up by the first one's flood.
    await stack.create()


async def test_unpaid_payments_by_the_thousand_cannot_starve_reconcile(
    attack_stack: StackFactory,
) -> None:
    """Finding 3: 1,000 unpaid payments (here from 1,000 addresses, as a botnet would) filled
    the reconcile loop's first-1,000 window: with the webhook lost, a paid payment created
    after them was never scanned and expired."""
    stack = await attack_stack(PAYMENT_TTL_SECONDS="60", EXPIRED_LOOKBACK_SECONDS="0")
    await stack.sandbox.admin.set_faults(webhook_drop_all=True)
    clients = [stack.client() for _ in range(1000)]
    slots = asyncio.Semaphore(50)

    async def junk(client: str) -> None:
        async with slots:
            await stack.create(client)

    started = time.monotonic()
    await asyncio.gather(*(junk(c) for c in clients))
    print(f"\n1,000 unpaid payments from 1,000 clients in {time.monotonic() - started:.1f} s")
    created = await stack.create()
    await stack.send(await stack.payer(), PRICE, created["reference"])
    view = await stack.wait(
        created["payment_id"], lambda v: v["status"] in ("provisioned", "expired"), timeout=70
    )
    assert view["status"] == "provisioned"


# --- 4. hidden by 25 ------------------------------------------------------------------------


async def test_failed_transactions_cannot_hide_the_real_payment(
    attack_stack: StackFactory,
) -> None:
    """Finding 4: the scan read 25 signatures and no further: 25 cheap failed transactions
    carrying the reference, newer than the real payment, hid it from reconcile and verify."""
    stack = await attack_stack(webhooks=False)
    created = await stack.create()
    buyer = await stack.payer()
    poor = await stack.payer(lamports=10_000_000)  # fees only: every transfer fails
    await stack.sandbox.admin.pause_clock()
    try:
        await stack.send(buyer, PRICE, created["reference"], confirm=False)
        for _ in range(30):
            await stack.send(poor, SOL, created["reference"], skip_preflight=True, confirm=False)
    finally:
        await stack.sandbox.admin.resume_clock()
    code, _, _ = await stack.call(
        "POST", "/api/pay/verify", client=stack.client(), json={"payment_id": created["payment_id"]}
    )
    assert code == 202
    view = await stack.wait(created["payment_id"], lambda v: v["status"] == "provisioned")
    assert view["received_lamports"] == str(PRICE)
    # The receipt may be counted first by another path (the signature seen at confirmed is
    # read again at finalized): the scan's observations follow it.
    deadline = time.monotonic() + 10
    while True:
        observations = await stack.observations(created["payment_id"])
        failed = [o for o in observations if o[1] == "transaction_failed"]
        if len(failed) >= 30 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(failed) == 30


# --- 5. money recorded nowhere --------------------------------------------------------------


async def test_money_received_after_the_end_is_owed_back_and_listed(
    attack_stack: StackFactory,
) -> None:
    """Finding 5: a payment received after `provisioned`, `failed`, or `expired` outside the
    late window left no trace."""
    stack = await attack_stack(PAYMENT_TTL_SECONDS="3", EXPIRED_LOOKBACK_SECONDS="1")
    provisioned, expired, cancelled = [await stack.create() for _ in range(3)]
    buyer = await stack.payer()
    await stack.send(buyer, PRICE, provisioned["reference"])
    await stack.wait(provisioned["payment_id"], lambda v: v["status"] == "provisioned")
    again = await stack.send(buyer, PRICE, provisioned["reference"])

    code, changed, err = await stack.ops("payments", "cancel", cancelled["payment_id"])
    assert code == 0, err
    assert changed["status"] == "failed"
    await stack.wait(expired["payment_id"], lambda v: v["status"] == "expired")
    await asyncio.sleep(2.5)  # past expiry + lookback: a payment now can no longer complete it
    late = await stack.send(buyer, PRICE, expired["reference"])
    after_cancel = await stack.send(buyer, PRICE, cancelled["reference"])

    views = {}
    for payment in (provisioned, expired, cancelled):
        views[payment["payment_id"]] = await stack.wait(
            payment["payment_id"], lambda v: v["refund_due_lamports"] == str(PRICE)
        )
    assert views[provisioned["payment_id"]]["received_lamports"] == str(2 * PRICE)
    assert views[expired["payment_id"]]["status"] == "expired"
    assert views[cancelled["payment_id"]]["status"] == "failed"
    assert await stack.count("SELECT count(*) FROM entitlements") == 1

    code, owed, err = await stack.ops("refunds")
    assert code == 0, err
    listed = {p["payment_id"]: p for p in owed["payments"]}
    for payment, signature in (
        (provisioned, again),
        (expired, late),
        (cancelled, after_cancel),
    ):
        entry = listed[payment["payment_id"]]
        assert entry["refund_due_lamports"] == str(PRICE)
        paid_back_to = {r["payer"] for r in entry["receipts"] if r["signature"] == str(signature)}
        assert paid_back_to == {str(buyer.pubkey())}


# --- 6. fee drain ---------------------------------------------------------------------------


async def test_the_merchant_never_signs_what_can_only_fail(attack_stack: StackFactory) -> None:
    """Finding 6: an unfunded `account` got a co-signed transaction that could only fail, at
    the merchant's cost; and one account could ask without end."""
    stack = await attack_stack()
    before = await stack.balance(stack.fee_payer.pubkey())
    code, body, _ = await stack.call(
        "POST",
        f"/api/pay/req/{ORDER}",
        client=stack.client(),
        json={"account": str(Keypair().pubkey())},
    )
    assert code == 422, body
    assert body["error"]["code"] == "transaction_would_fail"
    assert await stack.count("SELECT count(*) FROM payments") == 0

    funded = await stack.payer()
    codes = [
        (
            await stack.call(
                "POST",
                f"/api/pay/req/{ORDER}",
                client=stack.client(),  # a new client each time: the account is what counts
                json={"account": str(funded.pubkey())},
            )
        )[0]
        for _ in range(REQUESTS_PER_ACCOUNT + 3)
    ]
    assert codes.count(200) == REQUESTS_PER_ACCOUNT
    assert codes.count(429) == 3
    assert await stack.balance(stack.fee_payer.pubkey()) == before  # signed, never spent


# --- 7. silent development wallet -----------------------------------------------------------


async def test_production_refuses_to_start_without_a_merchant_wallet(
    own_nats: NatsServer, redis_server: RedisServer, solana_sandbox: SolanaSandbox, tmp_path: Path
) -> None:
    """Finding 7: without MERCHANT_WALLET the service took payments to a development address
    whose key comes from a public seed."""
    env = service_env(own_nats, redis_server, solana_sandbox, tmp_path)
    child = service_process("payments", env, port=free_port(), sink=quiet)
    await child.start()
    code = await asyncio.wait_for(child.wait(), 20)
    assert code == 2
    output = "".join(child.lines)
    assert "MERCHANT_WALLET" in output
    assert "Traceback" not in output
    assert len([line for line in child.lines if line.strip()]) == 1


# --- 8. shared idempotency keys -------------------------------------------------------------


async def test_an_idempotency_key_belongs_to_the_caller_who_sent_it(
    attack_stack: StackFactory,
) -> None:
    """Finding 8: keys were scoped by the body's user_id (absent: `anonymous`), so a second
    anonymous caller repeating a key got another buyer's payment id and reference."""
    stack = await attack_stack()
    key = {"Idempotency-Key": "checkout-1"}
    first_client, second_client = stack.client(), stack.client()
    _, first, _ = await stack.call(
        "POST", f"/api/pay/req/{ORDER}", client=first_client, json={}, headers=key
    )
    _, second, headers = await stack.call(
        "POST", f"/api/pay/req/{ORDER}", client=second_client, json={}, headers=key
    )
    assert second["payment_id"] != first["payment_id"]
    assert second["reference"] != first["reference"]
    assert "Idempotent-Replayed" not in headers
    _, again, headers = await stack.call(
        "POST", f"/api/pay/req/{ORDER}", client=first_client, json={}, headers=key
    )
    assert again["payment_id"] == first["payment_id"]
    assert headers["Idempotent-Replayed"] == "true"
    # Users named by the trusted proxy: alice's key is not bob's, from the same address.
    same_address = stack.client()
    answers = [
        (
            await stack.call(
                "POST",
                f"/api/pay/req/{ORDER}",
                client=same_address,
                json={},
                headers={**key, "X-User-Id": user},
            )
        )[1]
        for user in ("alice", "bob")
    ]
    assert answers[0]["payment_id"] != answers[1]["payment_id"]


# --- 9. null block time ---------------------------------------------------------------------


async def test_a_null_block_time_is_resolved_not_skipped(attack_stack: StackFactory) -> None:
    """Finding 9: with no block time the age rule was skipped: a transaction from long before
    the payment counted."""
    stack = await attack_stack()
    # The node reports blocks an hour old, and no block time in transactions.
    await stack.sandbox.admin.set_faults(block_time_offset_seconds=-3600, null_block_time=True)
    created = await stack.create()
    signature = await stack.send(await stack.payer(), PRICE, created["reference"])
    # Its webhook and the reconcile loop both look at it within a few seconds of finality:
    # it must never count.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        view = await stack.status(created["payment_id"])
        assert view["status"] == "pending", view
        assert view["tx_signature"] is None, view
        await asyncio.sleep(0.2)
    assert view["received_lamports"] == "0"
    assert (str(signature), "predates_payment") in await stack.observations(created["payment_id"])


# --- 10. the QR route -----------------------------------------------------------------------


async def test_any_bad_qr_amount_is_a_4xx(attack_stack: StackFactory) -> None:
    """Finding 10: `amount=1e999999999` answered 500."""
    stack = await attack_stack(webhooks=False)
    created = await stack.create()
    good = created["transfer_url"]
    amount = good.split("amount=")[1].split("&")[0]
    for bad in ("1e999999999", "1E9", "-0.1", "0.1e1", "nan", "inf", "0x10", "1" * 40, "0.1.1"):
        url = good.replace(f"amount={amount}", f"amount={bad}")
        code, body, _ = await stack.call(
            "GET",
            f"/api/pay/qr/{created['payment_id']}",
            client=stack.client(),
            params={"url": url},
        )
        assert code == 422, (bad, body)
        assert body["error"]["details"][0]["field"] == "url"
    async with stack.http.get(
        f"{stack.url}/api/pay/qr/{created['payment_id']}", params={"url": good}
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
