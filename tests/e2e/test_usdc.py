"""USDC (an SPL token) end to end: a catalogue item priced in USDC, paid through the transfer
URL (`spl-token=`) and through the transaction request (TransferChecked to the merchant's
associated token account, created in the same transaction), on real NATS, libSQL and the
sandbox chain with its test USDC mint. A receipt counts only the rise of the merchant's own
token account for the payment's mint: a look-alike mint, another owner's account or SOL sent
instead credit nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from axiom_payments.settings import DEV_MERCHANT_WALLET
from sandbox.solana.tokens import (
    SANDBOX_USDC_DECIMALS,
    SANDBOX_USDC_MINT,
    ata,
)
from sandbox.solana.wallet import pay_url
from tests.fixtures.solana import send_token_transfer
from tests.fixtures.system import PaymentSystem

pytestmark = pytest.mark.e2e

USDC_ORDER = "axiomid-pro-monthly-usdc"
USDC_PRICE = 5_000_000  # 5 USDC in the default catalogue
MERCHANT = Pubkey.from_string(DEV_MERCHANT_WALLET)


async def send_tokens(
    system: PaymentSystem,
    payer: Keypair,
    amount: int,
    references: tuple[str, ...],
    *,
    mint: Pubkey = SANDBOX_USDC_MINT,
    owner: Pubkey = MERCHANT,
) -> Signature:
    """`amount` of `mint` minted to the payer, then sent to `owner`'s token account."""
    system.solana.chain.mint_tokens(payer.pubkey(), amount, mint)
    async with AsyncClient(system.solana.rpc_url) as rpc:
        return await send_token_transfer(rpc, payer, str(owner), amount, references, mint=mint)


async def wait_for(
    system: PaymentSystem, payment_id: str, check: Any, timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = await system.status(payment_id)
        if check(view):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"{payment_id}: {view}")
        await asyncio.sleep(0.05)


async def observation(system: PaymentSystem, signature: Signature) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = await system.db.fetch_one(
            "SELECT reason FROM observations WHERE signature = ?", [str(signature)]
        )
        if row is not None:
            return str(row["reason"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no observation of {signature}")


async def entitlements(system: PaymentSystem, payment_id: str) -> int:
    return await system.count(
        "SELECT count(*) FROM entitlements e JOIN payments p ON p.id = e.payment_id"
        " WHERE p.public_id = ?",
        [payment_id],
    )


async def test_catalogue_prices_the_usdc_item_in_usdc(payment_system: PaymentSystem) -> None:
    status, items = await payment_system.call("GET", "/api/catalog")
    assert status == 200
    usdc = next(i for i in items if i["order_id"] == USDC_ORDER)
    assert usdc["currency"] == "USDC"
    assert usdc["amount"] == str(USDC_PRICE)
    assert usdc["decimals"] == SANDBOX_USDC_DECIMALS
    assert usdc["mint"] == str(SANDBOX_USDC_MINT)
    assert usdc["amount_lamports"] == "0"


async def test_usdc_transfer_url_is_provisioned_once(payment_system: PaymentSystem) -> None:
    await payment_system.solana.admin.set_faults(webhook_duplicate=5)
    created = await payment_system.create(USDC_ORDER)
    assert f"spl-token={SANDBOX_USDC_MINT}" in created["transfer_url"]
    assert "amount=5&" in created["transfer_url"]
    assert created["currency"] == "USDC"
    assert created["amount"] == str(USDC_PRICE)
    assert created["amount_lamports"] == "0"
    # The QR is drawn for the USDC transfer URL (it pays this payment, in its currency).
    code, _ = await _qr(payment_system, created)
    assert code == 200

    signature = await pay_url(created["transfer_url"], payment_system.solana.rpc_url)
    view = await payment_system.wait_status(created["payment_id"], "provisioned")
    assert view["tx_signature"] == str(signature)
    assert view["currency"] == "USDC"
    assert view["mint"] == str(SANDBOX_USDC_MINT)
    assert view["received"] == str(USDC_PRICE)
    assert view["refund_due"] == "0"
    assert view["received_lamports"] == "0"  # no USDC base unit is ever shown as a lamport
    await asyncio.sleep(1.0)  # every duplicate webhook and reconcile pass applied (or not)
    assert await entitlements(payment_system, created["payment_id"]) == 1
    receipts = await payment_system.db.fetch_all("SELECT signature, amount_lamports FROM receipts")
    assert [(r["signature"], r["amount_lamports"]) for r in receipts] == [
        (str(signature), USDC_PRICE)
    ]


async def _qr(system: PaymentSystem, created: dict[str, Any]) -> tuple[int, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{system.url}/api/pay/qr/{created['payment_id']}",
            params={"url": created["transfer_url"]},
        ) as resp,
    ):
        return resp.status, await resp.read()


async def test_usdc_qr_refuses_a_url_in_another_currency(payment_system: PaymentSystem) -> None:
    created = await payment_system.create(USDC_ORDER)
    as_sol = created["transfer_url"].replace(f"spl-token={SANDBOX_USDC_MINT}&", "")
    code, body = await _qr(payment_system, {**created, "transfer_url": as_sol})
    assert code == 422, body


async def test_usdc_transaction_request_is_provisioned_once(
    payment_system: PaymentSystem,
) -> None:
    link = "solana:" + quote(f"{payment_system.url}/api/pay/req/{USDC_ORDER}", safe="")
    payer = Keypair()
    signature = await pay_url(link, payment_system.solana.rpc_url, payer)
    row = await payment_system.db.fetch_one(
        "SELECT public_id FROM payments WHERE currency = 'USDC' ORDER BY id DESC LIMIT 1"
    )
    assert row is not None
    payment_id = str(row["public_id"])
    view = await payment_system.wait_status(payment_id, "provisioned")
    assert view["tx_signature"] == str(signature)
    assert view["received"] == str(USDC_PRICE)
    assert await entitlements(payment_system, payment_id) == 1
    # The merchant's token account was created in the payment itself (idempotently).
    async with AsyncClient(payment_system.solana.rpc_url) as rpc:
        tx = (await rpc.get_transaction(signature, max_supported_transaction_version=0)).value
        assert tx is not None
        keys = [str(k) for k in tx.transaction.transaction.message.account_keys]  # type: ignore[union-attr]
        assert str(ata(MERCHANT, SANDBOX_USDC_MINT)) in keys
    # A second one for the same payer works although the account exists now.
    signature = await pay_url(link, payment_system.solana.rpc_url, payer)
    row = await payment_system.db.fetch_one(
        "SELECT public_id FROM payments WHERE currency = 'USDC' ORDER BY id DESC LIMIT 1"
    )
    assert row is not None
    await payment_system.wait_status(str(row["public_id"]), "provisioned")


async def test_a_look_alike_mint_never_provisions(payment_system: PaymentSystem) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create(USDC_ORDER)
    fake = payment_system.solana.chain.create_mint(SANDBOX_USDC_DECIMALS)
    signature = await send_tokens(
        payment_system, payer, USDC_PRICE * 10, (created["reference"],), mint=fake
    )
    assert await observation(payment_system, signature) == "no_credit"
    view = await payment_system.status(created["payment_id"])
    assert view["status"] == "pending"
    assert view["received"] == "0"
    assert await entitlements(payment_system, created["payment_id"]) == 0


async def test_another_owners_token_account_never_provisions(
    payment_system: PaymentSystem,
) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create(USDC_ORDER)
    attacker = Keypair().pubkey()
    signature = await send_tokens(
        payment_system, payer, USDC_PRICE, (created["reference"],), owner=attacker
    )
    assert await observation(payment_system, signature) == "no_credit"
    view = await payment_system.status(created["payment_id"])
    assert (view["status"], view["received"]) == ("pending", "0")
    assert await entitlements(payment_system, created["payment_id"]) == 0


async def test_sol_sent_to_a_usdc_payment_credits_nothing(payment_system: PaymentSystem) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create(USDC_ORDER)
    # 5,000,000 lamports for a 5,000,000-base-unit USDC price: lamports are not USDC.
    signature = await payment_system.send(payer, USDC_PRICE, (created["reference"],))
    assert await observation(payment_system, signature) == "no_credit"
    view = await payment_system.status(created["payment_id"])
    assert (view["status"], view["received"]) == ("pending", "0")


async def test_a_short_usdc_amount_never_provisions(payment_system: PaymentSystem) -> None:
    """Short is a partial receipt (DESIGN.md: topped up before expiry, owed back after it),
    never a completed payment."""
    payer = await payment_system.payer()
    created = await payment_system.create(USDC_ORDER)
    await send_tokens(payment_system, payer, USDC_PRICE - 1, (created["reference"],))
    view = await wait_for(
        payment_system, created["payment_id"], lambda v: v["received"] == str(USDC_PRICE - 1)
    )
    assert view["status"] == "pending"
    assert view["refund_due"] == "0"  # it can still be topped up
    await asyncio.sleep(1.0)
    assert (await payment_system.status(created["payment_id"]))["status"] == "pending"
    assert await entitlements(payment_system, created["payment_id"]) == 0
    # A top-up of the last base unit completes it.
    await send_tokens(payment_system, payer, 1, (created["reference"],))
    await payment_system.wait_status(created["payment_id"], "provisioned")


async def test_a_usdc_overpayment_shows_its_refund_due(payment_system: PaymentSystem) -> None:
    payer = await payment_system.payer()
    created = await payment_system.create(USDC_ORDER)
    await send_tokens(payment_system, payer, USDC_PRICE + 2_000_000, (created["reference"],))
    view = await payment_system.wait_status(created["payment_id"], "provisioned")
    assert view["received"] == str(USDC_PRICE + 2_000_000)
    assert view["refund_due"] == "2000000"
    assert view["refund_due_lamports"] == "0"
    receipt = await payment_system.db.fetch_one("SELECT payer FROM receipts")
    assert receipt is not None
    assert receipt["payer"] == str(payer.pubkey())  # where the refund goes
