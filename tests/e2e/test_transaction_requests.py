"""Transaction requests for an existing payment (issue 18): `POST /api/pay/req/{order}?payment=`
answers with that pending payment's transaction and creates nothing; anything else is a 4xx
JSON error, and nothing is stored for it."""

from __future__ import annotations

import base64
from urllib.parse import quote

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.transaction import Transaction

from axiom_shared.settings import DEV_MERCHANT_WALLET
from tests.fixtures.system import ORDER, PRICE, PaymentSystem, SystemFactory

pytestmark = pytest.mark.e2e


async def payments(system: PaymentSystem) -> int:
    return await system.count("SELECT count(*) FROM payments")


async def test_the_payments_transaction_and_nothing_created(payment_system: PaymentSystem) -> None:
    system = payment_system
    created = await system.create()
    buyer = await system.payer()
    code, answer = await system.call(
        "POST",
        f"/api/pay/req/{ORDER}?payment={created['payment_id']}",
        json={"account": str(buyer.pubkey())},
    )
    assert code == 200, answer
    assert answer["payment_id"] == created["payment_id"]
    assert answer["reference"] == created["reference"]
    assert answer["transfer_url"] == created["transfer_url"]
    assert answer["transaction_request_url"] is None  # no https origin here
    tx = Transaction.from_bytes(base64.b64decode(answer["transaction"]))
    keys = [str(k) for k in tx.message.account_keys]
    assert created["reference"] in keys
    assert DEV_MERCHANT_WALLET in keys
    assert await payments(system) == 1
    # The wallet signs and sends it: the watched payment is paid.
    tx.partial_sign([buyer], tx.message.recent_blockhash)
    async with AsyncClient(system.solana.rpc_url) as rpc:
        await rpc.send_raw_transaction(bytes(tx))
    view = await system.wait_status(created["payment_id"], "provisioned")
    assert view["received_lamports"] == str(PRICE)


async def test_what_cannot_be_paid_is_a_4xx_json_error(
    payment_system_factory: SystemFactory,
) -> None:
    system = await payment_system_factory(payments={"payment_ttl_seconds": 1})
    created = await system.create()
    other = await system.create("axiomid-pro-yearly")
    account = {"account": str(Keypair().pubkey())}
    cases = [
        (f"/api/pay/req/{ORDER}?payment=not-a-payment-id", account, 404, "not_found"),
        (f"/api/pay/req/{ORDER}?payment=pay_{'x' * 24}", account, 404, "not_found"),
        (f"/api/pay/req/{ORDER}?payment={other['payment_id']}", account, 404, "not_found"),
        (
            f"/api/pay/req/{ORDER}?payment={created['payment_id']}",
            {"account": DEV_MERCHANT_WALLET},
            422,
            "account_not_allowed",
        ),
        (f"/api/pay/req/{ORDER}?payment={created['payment_id']}", {"x": 1}, 422, None),
    ]
    for path, body, status, code in cases:
        got, answer = await system.call("POST", path, json=body)
        assert got == status, (path, answer)
        if code:
            assert answer["error"]["code"] == code, answer
    await system.wait_status(created["payment_id"], "expired", timeout=10)
    got, answer = await system.call(
        "POST", f"/api/pay/req/{ORDER}?payment={created['payment_id']}", json=account
    )
    assert got == 409, answer
    assert answer["error"]["code"] == "payment_not_payable"
    assert await payments(system) == 2, "nothing was created for any of them"


async def test_the_qr_code_is_drawn_only_for_this_payments_own_urls(
    payment_system: PaymentSystem,
) -> None:
    system = payment_system
    created = await system.create()
    payment_id = created["payment_id"]
    qr = f"{system.url}/api/pay/qr/{payment_id}?url={quote(created['transfer_url'], safe='')}"
    async with aiohttp.ClientSession() as http, http.get(qr) as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
    foreign = "solana:" + quote(
        f"https://evil.example/api/pay/req/{ORDER}?payment={payment_id}", safe=""
    )
    for url in (foreign, "solana:https%3A%2F%2F", "solana:" + "x" * 3000):
        got, answer = await system.call(
            "GET", f"/api/pay/qr/{payment_id}?url={quote(url, safe='')}"
        )
        assert got == 422, (url, answer)
        assert answer["error"]["code"] == "validation_error"
