"""Refunds end to end, on the services as real processes (the attack suite's production-like
stack: explicit MERCHANT_WALLET, a separate fee-payer key), the sandbox chain and its Helius
webhooks, and `axiom-ops` as the operator runs it.

An operator asks for a refund of what a payment has due; the refund request is a Solana Pay
transfer from the merchant's wallet (signed here by the test's merchant key, as the
merchant's own wallet would) to the account that paid; the receipts machinery sees it land at
`finalized` and the payment's refund becomes `refunded` once, however many times it is found.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from axiom_shared.errors import ApiError
from axiom_shared.nats import connect_nats
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import RefundResult, RequestRefundInput
from sandbox.solana.tokens import (
    SANDBOX_USDC_MINT,
)
from sandbox.solana.wallet import pay_url, sign_own_slot, token_balance
from tests.fixtures.solana import airdrop, send_token_transfer
from tests.fixtures.stack import ORDER, PRICE, SOL, Stack, StackFactory

pytestmark = pytest.mark.e2e

USDC_ORDER = "axiomid-pro-monthly-usdc"
USDC_PRICE = 5_000_000
EXTRA = 12_345_678  # lamports paid beyond the price
USDC_EXTRA = 2_500_000  # 2.5 USDC beyond the price
USDC = {"USDC_MINT": str(SANDBOX_USDC_MINT)}


def error_code(stderr: str) -> str:
    """The code of the JSON error `axiom-ops` wrote first on stderr (log lines follow)."""
    code: str = json.loads(stderr.splitlines()[0])["error"]["code"]
    return code


async def overpaid(stack: Stack, order: str = ORDER) -> tuple[dict[str, Any], Keypair]:
    """A provisioned payment paid beyond its price, and who paid it."""
    payer = await stack.payer()
    code, created, _ = await stack.call(
        "POST", f"/api/pay/req/{order}", client=stack.client(), json={}
    )
    assert code == 200, created
    if order == ORDER:
        await stack.send(payer, PRICE + EXTRA, created["reference"])
    else:
        await send_tokens(stack, payer, USDC_PRICE + USDC_EXTRA, created["reference"])
    view = await stack.wait(created["payment_id"], lambda v: v["status"] == "provisioned")
    assert view["refund_status"] == "refund_due"
    return view, payer


async def send_tokens(stack: Stack, payer: Keypair, amount: int, reference: str) -> Signature:
    stack.sandbox.chain.mint_tokens(payer.pubkey(), amount)
    async with AsyncClient(stack.sandbox.rpc_url) as rpc:
        return await send_token_transfer(
            rpc, payer, str(stack.merchant.pubkey()), amount, (reference,)
        )


async def sign_and_send(stack: Stack, transaction: str, signer: Keypair) -> Signature:
    """What the merchant's wallet does with the refund request's transaction."""
    unsigned = VersionedTransaction.from_bytes(base64.b64decode(transaction))
    async with AsyncClient(stack.sandbox.rpc_url) as rpc:
        signature = (await rpc.send_raw_transaction(bytes(sign_own_slot(unsigned, signer)))).value
        await rpc.confirm_transaction(signature, Confirmed, sleep_seconds=0.05)
        return signature


async def landings(stack: Stack, payment_id: str) -> int:
    return await stack.count(
        "SELECT count(*) FROM payment_events e JOIN payments p ON p.id = e.payment_id"
        " WHERE p.public_id = ? AND e.reason LIKE 'refund % landed:%'",
        [payment_id],
    )


async def test_an_overpaid_sol_payment_is_refunded_once(attack_stack: StackFactory) -> None:
    stack = await attack_stack()
    await stack.sandbox.admin.set_faults(webhook_duplicate=5)
    view, payer = await overpaid(stack)
    payment_id = view["payment_id"]
    assert view["refund_due_lamports"] == str(EXTRA)

    # More than is due: refused, nothing created.
    code, _, err = await stack.ops("refunds", "request", payment_id, "--amount", str(EXTRA + 1))
    assert code == 1
    assert error_code(err) == "refund_exceeds_due"
    assert await stack.count("SELECT count(*) FROM refunds") == 0

    code, asked, err = await stack.ops("refunds", "request", payment_id)
    assert code == 0, err
    refund = asked["refund"]
    assert refund["status"] == "requested"
    assert refund["amount"] == str(EXTRA)
    assert refund["recipient"] == str(payer.pubkey())  # taken from the receipt
    assert refund["sender"] == str(stack.merchant.pubkey())
    assert refund["transfer_url"].startswith(f"solana:{payer.pubkey()}?amount=0.012345678&")
    assert asked["transaction"]
    view = await stack.status(payment_id)
    assert view["refund_status"] == "refund_requested"
    # A second request while one is open: refused.
    code, _, err = await stack.ops("refunds", "request", payment_id)
    assert code == 1
    assert error_code(err) == "refund_already_requested"

    # The merchant's wallet takes it as a Solana Pay transaction request from the gateway.
    link = f"/api/refunds/req/{refund['refund_id']}"
    code, info, _ = await stack.call("GET", link, client=stack.client())
    assert code == 200, info
    assert info["label"] == f"Refund of payment {payment_id}"
    code, body, _ = await stack.call(
        "POST", link, client=stack.client(), json={"account": str(payer.pubkey())}
    )
    assert (code, body["error"]["code"]) == (422, "account_not_allowed")
    code, body, _ = await stack.call(
        "POST", link, client=stack.client(), json={"account": str(stack.merchant.pubkey())}
    )
    assert code == 200, body
    async with stack.http.get(
        f"{stack.url}/api/refunds/qr/{refund['refund_id']}", headers={"X-Forwarded-For": "1.2.3.4"}
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
    for unknown in ("rf_" + "x" * 24, "../etc"):
        code, _, _ = await stack.call("GET", f"/api/refunds/req/{unknown}", client=stack.client())
        assert code == 404
    before = await stack.balance(payer.pubkey())
    signature = await sign_and_send(stack, body["transaction"], stack.merchant)
    view = await stack.wait(payment_id, lambda v: v["refund_status"] == "refunded")
    assert view["refunded"] == str(EXTRA)
    assert (view["refund_due"], view["refund_due_lamports"]) == ("0", "0")
    assert await stack.balance(payer.pubkey()) == before + EXTRA
    # Five webhook deliveries, a manual check naming the signature, and reconcile: once.
    code, _, _ = await stack.call(
        "POST",
        "/api/pay/verify",
        client=stack.client(),
        json={"payment_id": payment_id, "signature": str(signature)},
    )
    assert code == 202
    await asyncio.sleep(2.0)
    assert await landings(stack, payment_id) == 1
    code, shown, err = await stack.ops("refunds", "show", refund["refund_id"])
    assert code == 0, err
    assert shown["refund"]["status"] == "refunded"
    assert shown["refund"]["signature"] == str(signature)
    assert shown["transaction"] is None
    code, body, _ = await stack.call(
        "POST", link, client=stack.client(), json={"account": str(stack.merchant.pubkey())}
    )
    assert (code, body["error"]["code"]) == (409, "refund_closed")
    reasons = [e["reason"] or "" for e in shown["audit_trail"]]
    assert any("requested" in r for r in reasons)
    assert sum("landed" in r for r in reasons) == 1
    code, listed, _ = await stack.ops("refunds", "list", "--status", "refunded")
    assert [r["refund_id"] for r in listed] == [refund["refund_id"]]
    # Nothing is due any more: asking again is refused.
    code, _, err = await stack.ops("refunds", "request", payment_id)
    assert (code, error_code(err)) == (1, "nothing_due")


async def test_an_overpaid_usdc_payment_is_refunded_through_its_url(
    attack_stack: StackFactory,
) -> None:
    stack = await attack_stack(**USDC)
    await stack.sandbox.admin.set_faults(webhook_duplicate=5)
    view, payer = await overpaid(stack, USDC_ORDER)
    payment_id = view["payment_id"]
    assert (view["refund_due"], view["refund_due_lamports"]) == (str(USDC_EXTRA), "0")
    # Part of it first: 1 USDC of the 2.5 due.
    code, asked, err = await stack.ops("refunds", "request", payment_id, "--amount", "1000000")
    assert code == 0, err
    url = asked["refund"]["transfer_url"]
    assert f"spl-token={SANDBOX_USDC_MINT}" in url
    assert "amount=1&" in url
    async with AsyncClient(stack.sandbox.rpc_url) as rpc:
        before = await token_balance(rpc, payer.pubkey(), SANDBOX_USDC_MINT)
    # The merchant's wallet pays the refund's transfer URL (as a Solana Pay wallet would).
    await pay_url(url, stack.sandbox.rpc_url, stack.merchant)
    view = await stack.wait(payment_id, lambda v: v["refunded"] == "1000000")
    assert view["refund_status"] == "refund_due"  # 1.5 USDC still due
    assert view["refund_due"] == str(USDC_EXTRA - 1_000_000)
    # The rest, through the transaction.
    code, asked, err = await stack.ops("refunds", "request", payment_id)
    assert code == 0, err
    assert asked["refund"]["amount"] == str(USDC_EXTRA - 1_000_000)
    await sign_and_send(stack, asked["transaction"], stack.merchant)
    view = await stack.wait(payment_id, lambda v: v["refund_status"] == "refunded")
    assert view["refunded"] == str(USDC_EXTRA)
    async with AsyncClient(stack.sandbox.rpc_url) as rpc:
        assert await token_balance(rpc, payer.pubkey(), SANDBOX_USDC_MINT) == before + USDC_EXTRA
    await asyncio.sleep(1.5)
    assert await landings(stack, payment_id) == 2


async def test_a_crash_between_request_and_landing_loses_nothing(
    attack_stack: StackFactory,
) -> None:
    stack = await attack_stack()
    view, _ = await overpaid(stack)
    payment_id = view["payment_id"]
    code, asked, err = await stack.ops("refunds", "request", payment_id)
    assert code == 0, err
    payments = stack.children["payments"]
    payments.kill()  # SIGKILL: nothing is flushed, nothing is finished
    await payments.wait()
    await sign_and_send(stack, asked["transaction"], stack.merchant)
    await stack.sandbox.finalize()
    await asyncio.sleep(1.0)  # the webhook arrives while payments is down
    await payments.start()
    await payments.wait_healthy(30)
    view = await stack.wait(payment_id, lambda v: v["refund_status"] == "refunded")
    assert view["refunded"] == str(EXTRA)
    await asyncio.sleep(1.5)
    assert await landings(stack, payment_id) == 1
    assert await stack.count("SELECT count(*) FROM refunds WHERE status = 'refunded'") == 1


async def test_a_refund_that_never_lands_expires_and_can_be_asked_again(
    attack_stack: StackFactory,
) -> None:
    stack = await attack_stack(REFUND_TTL_SECONDS="60")
    view, _ = await overpaid(stack)
    payment_id = view["payment_id"]
    code, asked, err = await stack.ops("refunds", "request", payment_id)
    assert code == 0, err
    # Its expiry passes (moved in the DB: the shortest TTL a setting allows is a minute).
    await stack.db.execute(
        "UPDATE refunds SET expires_at = '2000-01-01T00:00:00.000000+00:00' WHERE public_id = ?",
        [asked["refund"]["refund_id"]],
    )
    view = await stack.wait(payment_id, lambda v: v["refund_status"] == "refund_due")
    assert view["refund_due_lamports"] == str(EXTRA)
    code, again, err = await stack.ops("refunds", "request", payment_id)
    assert code == 0, err
    assert again["refund"]["refund_id"] != asked["refund"]["refund_id"]
    await sign_and_send(stack, again["transaction"], stack.merchant)
    view = await stack.wait(payment_id, lambda v: v["refund_status"] == "refunded")
    assert view["refunded"] == str(EXTRA)


async def test_the_hot_wallet_respects_its_caps(attack_stack: StackFactory) -> None:
    hot = Keypair()
    per_refund, per_day = EXTRA - 1, EXTRA + EXTRA // 2
    stack = await attack_stack(
        REFUND_PRIVATE_KEY=str(hot),
        REFUND_MAX_LAMPORTS=str(per_refund),
        REFUND_DAILY_MAX_LAMPORTS=str(per_day),
    )
    await airdrop(stack.sandbox, str(hot.pubkey()), SOL)
    first, _ = await overpaid(stack)
    second, _ = await overpaid(stack)

    async def hot_refund(payment_id: str, amount: int | None = None) -> tuple[int, Any, str]:
        extra = ["--amount", str(amount)] if amount is not None else []
        return await stack.ops("refunds", "request", payment_id, "--hot-wallet", *extra)

    # All that is due is over the per-refund cap: refused, nothing created.
    code, _, err = await hot_refund(first["payment_id"])
    assert (code, error_code(err)) == (1, "refund_cap_exceeded")
    assert await stack.count("SELECT count(*) FROM refunds") == 0
    # Within it: signed and sent by the service itself.
    code, asked, err = await hot_refund(first["payment_id"], per_refund)
    assert code == 0, err
    assert asked["refund"]["mode"] == "hot_wallet"
    assert asked["refund"]["sender"] == str(hot.pubkey())
    assert asked["transaction"] is None  # nothing for anyone to sign
    view = await stack.wait(first["payment_id"], lambda v: v["refunded"] == str(per_refund))
    assert (view["refund_status"], view["refund_due"]) == ("refund_due", "1")
    # The day's cap (EXTRA // 2 + 1 left): two requests side by side, each within the
    # per-refund cap and together over the day's: exactly one is admitted.
    third, _ = await overpaid(stack)
    nc = await connect_nats(stack.env["NATS_URL"], "refund-test")
    try:
        client = PaymentsClient(nc, 10.0)
        answers = await asyncio.gather(
            *(
                client.request_refund(
                    RequestRefundInput(
                        payment_id=p["payment_id"],
                        amount=EXTRA // 2,
                        hot_wallet=True,
                        requested_by="test",
                    )
                )
                for p in (second, third)
            ),
            return_exceptions=True,
        )
    finally:
        await nc.close()
    refused = [a for a in answers if isinstance(a, ApiError)]
    assert [a.code for a in refused] == ["refund_cap_exceeded"], answers
    admitted = next(a for a in answers if isinstance(a, RefundResult)).refund.payment_id
    other = third if admitted == second["payment_id"] else second
    await stack.wait(admitted, lambda v: v["refunded"] == str(EXTRA // 2))
    # What is left of the day's cap, and not a base unit more.
    code, _, err = await hot_refund(other["payment_id"], 2)
    assert (code, error_code(err)) == (1, "refund_cap_exceeded")
    code, _, err = await hot_refund(other["payment_id"], 1)
    assert code == 0, err
    await stack.wait(other["payment_id"], lambda v: v["refunded"] == "1")
    assert await stack.count("SELECT count(*) FROM refunds WHERE status = 'refunded'") == 3
    # The key never shows: not in an answer, a log line or the metrics.
    secret = str(hot)
    logs = "".join(line for child in stack.children.values() for line in child.lines)
    assert secret not in logs
    assert secret not in json.dumps(asked)
    async with stack.http.get(stack.children["payments"].base_url + "/metrics") as resp:
        assert secret not in await resp.text()


async def test_hot_wallet_mode_is_off_by_default(attack_stack: StackFactory) -> None:
    stack = await attack_stack()
    view, _ = await overpaid(stack)
    code, _, err = await stack.ops("refunds", "request", view["payment_id"], "--hot-wallet")
    assert (code, error_code(err)) == (1, "hot_wallet_disabled")
    assert await stack.count("SELECT count(*) FROM refunds") == 0


async def test_a_strangers_dust_never_redirects_a_refund(attack_stack: StackFactory) -> None:
    stack = await attack_stack()
    view, payer = await overpaid(stack)
    payment_id = view["payment_id"]
    stranger = await stack.payer()
    await stack.send(stranger, 1, view["reference"])  # the last receipt, by someone else
    await stack.wait(payment_id, lambda v: v["refund_due_lamports"] == str(EXTRA + 1))
    # Not to an account that did not pay it, and nobody gets more than they paid.
    code, _, err = await stack.ops(
        "refunds", "request", payment_id, "--recipient", str(Keypair().pubkey())
    )
    assert (code, error_code(err)) == (1, "payer_unknown")
    code, _, err = await stack.ops(
        "refunds", "request", payment_id, "--recipient", str(stranger.pubkey()), "--amount", "2"
    )
    assert (code, error_code(err)) == (1, "refund_exceeds_due")
    code, asked, err = await stack.ops("refunds", "request", payment_id, "--amount", str(EXTRA))
    assert code == 0, err
    assert asked["refund"]["recipient"] == str(payer.pubkey())  # who paid the most


async def test_a_late_top_up_cannot_complete_a_payment_being_refunded(
    attack_stack: StackFactory,
) -> None:
    """Expired with half paid, its half asked back, then the other half arrives (within the
    lookback, where it would otherwise complete the payment): the buyer must not get both the
    item and the refund. The payment stays expired and the top-up is owed back too."""
    stack = await attack_stack(PAYMENT_TTL_SECONDS="2")
    payer = await stack.payer()
    created = await stack.create()
    payment_id = created["payment_id"]
    await stack.send(payer, PRICE // 2, created["reference"])
    view = await stack.wait(payment_id, lambda v: v["status"] == "expired")
    await stack.wait(payment_id, lambda v: v["refund_due_lamports"] == str(PRICE // 2))
    code, asked, err = await stack.ops("refunds", "request", payment_id)
    assert code == 0, err
    await stack.send(payer, PRICE // 2, created["reference"])
    view = await stack.wait(payment_id, lambda v: v["received_lamports"] == str(PRICE))
    assert view["status"] == "expired"
    assert view["refund_due_lamports"] == str(PRICE)  # the asked half and the top-up
    await sign_and_send(stack, asked["transaction"], stack.merchant)
    view = await stack.wait(payment_id, lambda v: v["refunded"] == str(PRICE // 2))
    assert view["status"] == "expired"
    assert (view["refund_status"], view["refund_due_lamports"]) == ("refund_due", str(PRICE // 2))
    assert await stack.count("SELECT count(*) FROM entitlements") == 0
