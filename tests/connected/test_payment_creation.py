"""Payment creation and Solana Pay transaction requests, through the gateway, on real NATS,
libSQL and the Solana sandbox chain."""

from __future__ import annotations

import asyncio
import base64
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.transaction import Transaction, VersionedTransaction

from axiom_payments.settings import DEV_MERCHANT_WALLET
from axiom_payments.solana_pay import MEMO_PROGRAM_ID
from axiom_shared.schemas import PaymentStatusChanged
from axiom_shared.topology import PAYMENT_STATUS_BUCKET
from sandbox.solana.wallet import TransferRequest, parse_solana_pay_url, pay_url
from tests.fixtures.infra import wait_for
from tests.fixtures.services import PaymentsStack, StackFactory
from tests.fixtures.solana import airdrop, rpc_call

pytestmark = pytest.mark.connected

ORDER = "axiomid-pro-monthly"
PRICE = 100_000_000


async def call(
    stack: PaymentsStack, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, **kwargs) as resp,
    ):
        body = await resp.json(content_type=None)
        return resp.status, body, resp.headers


async def test_catalogue_and_transaction_request_label(payments_stack: PaymentsStack) -> None:
    status, items, _ = await call(payments_stack, "GET", "/api/catalog")
    assert status == 200
    assert {
        "order_id": ORDER,
        "label": "AxiomID Pro — 1 month",
        "amount_lamports": "100000000",
        "currency": "SOL",
        "amount": "100000000",
        "decimals": 9,
        "mint": None,
    } in items
    status, info, _ = await call(payments_stack, "GET", f"/api/pay/req/{ORDER}")
    assert status == 200
    assert info["label"] == "AxiomID Pro — 1 month"
    assert info["icon"] == payments_stack.url + "/static/axiomid.svg"
    async with aiohttp.ClientSession() as http, http.get(info["icon"]) as icon:
        assert icon.status == 200
        assert icon.content_type == "image/svg+xml"
    status, body, _ = await call(payments_stack, "GET", "/api/pay/req/no-such-order")
    assert status == 404
    assert body["error"]["code"] == "not_found"


async def test_transaction_for_the_payer_lands_on_chain(payments_stack: PaymentsStack) -> None:
    payer = Keypair()
    await airdrop(payments_stack.solana, str(payer.pubkey()), 2_000_000_000)
    status, created, _ = await call(
        payments_stack, "POST", f"/api/pay/req/{ORDER}", json={"account": str(payer.pubkey())}
    )
    assert status == 200, created
    assert created["amount_lamports"] == str(PRICE)
    assert created["recipient"] == DEV_MERCHANT_WALLET

    tx = Transaction.from_bytes(base64.b64decode(created["transaction"]))
    message = tx.message
    keys = message.account_keys
    assert keys[0] == payer.pubkey()  # the payer pays the fee
    assert tx.signatures == [Signature.default()]  # its slot is empty, for the wallet
    memo_ix, transfer_ix = message.instructions  # the transfer is last, the memo before it
    assert keys[memo_ix.program_id_index] == MEMO_PROGRAM_ID
    assert bytes(memo_ix.data).decode() == created["payment_id"]
    assert keys[transfer_ix.program_id_index] == SYSTEM_PROGRAM_ID
    assert int.from_bytes(bytes(transfer_ix.data)[4:12], "little") == PRICE
    transfer_accounts = [keys[i] for i in transfer_ix.accounts]
    reference = Pubkey.from_string(created["reference"])
    assert transfer_accounts == [payer.pubkey(), Pubkey.from_string(DEV_MERCHANT_WALLET), reference]
    ref_index = keys.index(reference)
    assert not message.is_signer(ref_index)
    # read-only non-signers are the last `num_readonly_unsigned_accounts` keys
    assert ref_index >= len(keys) - message.header.num_readonly_unsigned_accounts

    async with AsyncClient(payments_stack.solana.rpc_url) as rpc:
        valid = await rpc_call(
            payments_stack.solana.rpc_url,
            "isBlockhashValid",
            [str(message.recent_blockhash), {"commitment": "finalized"}],
        )
        assert valid["result"]["value"] is True
        tx.sign([payer], message.recent_blockhash)
        signature = (await rpc.send_transaction(VersionedTransaction.from_legacy(tx))).value
        await rpc.confirm_transaction(signature, Confirmed, sleep_seconds=0.05)
        found = (await rpc.get_signatures_for_address(reference, commitment=Confirmed)).value
        assert [s.signature for s in found] == [signature]
        balance = (await rpc.get_balance(Pubkey.from_string(DEV_MERCHANT_WALLET), Confirmed)).value
        assert balance >= PRICE


async def test_merchant_cosigns_as_fee_payer(payments_stack_factory: StackFactory) -> None:
    merchant = Keypair()
    stack = await payments_stack_factory(solana_private_key=str(merchant))
    await airdrop(stack.solana, str(merchant.pubkey()), 1_000_000_000)
    payer = Keypair()
    await airdrop(stack.solana, str(payer.pubkey()), PRICE + 1_000_000)  # no extra for fees

    status, created, _ = await call(
        stack, "POST", f"/api/pay/req/{ORDER}", json={"account": str(payer.pubkey())}
    )
    assert status == 200, created
    assert created["recipient"] == str(merchant.pubkey())  # MERCHANT_WALLET defaults to it
    tx = Transaction.from_bytes(base64.b64decode(created["transaction"]))
    keys = tx.message.account_keys
    assert keys[0] == merchant.pubkey()
    assert keys[1] == payer.pubkey()
    merchant_sig, payer_sig = tx.signatures
    assert merchant_sig.verify(merchant.pubkey(), bytes(tx.message_data()))
    assert payer_sig == Signature.default()

    _, stored, _ = await call(stack, "GET", f"/api/pay/check-status/{created['payment_id']}")
    assert stored["expected_signature"] == str(merchant_sig)

    async with AsyncClient(stack.solana.rpc_url) as rpc:
        tx.partial_sign([payer], tx.message.recent_blockhash)
        assert tx.signatures[0] == merchant_sig  # the merchant's signature is kept
        signature = (await rpc.send_transaction(VersionedTransaction.from_legacy(tx))).value
        await rpc.confirm_transaction(signature, Confirmed, sleep_seconds=0.05)
        assert str(signature) == stored["expected_signature"]
        payer_balance = (await rpc.get_balance(payer.pubkey(), Confirmed)).value
        assert payer_balance == 1_000_000  # paid the price, not a lamport of fees
    # The key never leaves the service.
    assert str(merchant) not in json.dumps(created)
    assert str(merchant) not in json.dumps(stored)


async def test_wallet_pays_both_url_kinds(payments_stack: PaymentsStack) -> None:
    status, created, _ = await call(payments_stack, "POST", f"/api/pay/req/{ORDER}", json={})
    assert status == 200
    assert "transaction" not in created or created["transaction"] is None
    parsed = parse_solana_pay_url(created["transfer_url"])
    assert isinstance(parsed, TransferRequest)
    assert str(parsed.recipient) == created["recipient"]
    assert parsed.amount_lamports == PRICE
    assert Decimal(created["transfer_url"].split("amount=")[1].split("&")[0]) == Decimal("0.1")
    assert [str(r) for r in parsed.references] == [created["reference"]]
    assert parsed.label == "AxiomID Pro — 1 month"
    assert parsed.memo == created["payment_id"]

    rpc_url = payments_stack.solana.rpc_url
    sig_transfer = await pay_url(created["transfer_url"], rpc_url)
    link = f"solana:{payments_stack.url}/api/pay/req/{ORDER}"
    sig_request = await pay_url(link, rpc_url)
    async with AsyncClient(rpc_url) as rpc:
        landed = await rpc.get_signature_statuses([sig_transfer, sig_request])
        assert all(s is not None and s.err is None for s in landed.value)
        refs = (
            await rpc.get_signatures_for_address(
                Pubkey.from_string(created["reference"]), commitment=Confirmed
            )
        ).value
        assert [s.signature for s in refs] == [sig_transfer]


async def test_creation_publishes_pending_status(payments_stack: PaymentsStack) -> None:
    status, created, _ = await call(payments_stack, "POST", f"/api/pay/req/{ORDER}", json={})
    assert status == 200
    payment_id = created["payment_id"]
    status, view, headers = await call(payments_stack, "GET", f"/api/pay/check-status/{payment_id}")
    assert status == 200
    assert view["status"] == "pending"
    assert view["tx_signature"] is None
    assert view["finalized_at"] is None
    assert view["version"] == 1
    assert headers["Cache-Control"] == "no-store"

    from nats.js.errors import KeyNotFoundError

    from axiom_shared.nats import connect_nats

    nc = await connect_nats(payments_stack.nats_url, "test")
    try:
        kv = await nc.jetstream().key_value(PAYMENT_STATUS_BUCKET)

        async def published() -> bool:
            try:
                return (await kv.get(payment_id)).value is not None
            except KeyNotFoundError:
                return False

        await wait_for(published, 5)
        latest = PaymentStatusChanged.from_bytes((await kv.get(payment_id)).value or b"")
        assert latest.payment.status == "pending"
        assert latest.source == "creation"
    finally:
        await nc.close()
    assert await payments_stack.count("outbox") == 0  # relayed, then removed


async def test_idempotency_key(payments_stack: PaymentsStack) -> None:
    account = str(Keypair().pubkey())
    headers = {"Idempotency-Key": '"order-123"'}
    path = f"/api/pay/req/{ORDER}"
    s1, first, h1 = await call(
        payments_stack, "POST", path, json={"account": account}, headers=headers
    )
    s2, again, h2 = await call(
        payments_stack, "POST", path, json={"account": account}, headers=headers
    )
    assert (s1, s2) == (200, 200)
    assert again == first  # the first answer, transaction and all
    assert "Idempotent-Replayed" not in h1
    assert h2["Idempotent-Replayed"] == "true"
    assert await payments_stack.count("payments") == 1

    s3, other, _ = await call(
        payments_stack, "POST", path, json={"account": str(Keypair().pubkey())}, headers=headers
    )
    assert s3 == 422
    assert other["error"]["code"] == "idempotency_key_reused"

    racing = await asyncio.gather(
        *(
            call(payments_stack, "POST", path, json={}, headers={"Idempotency-Key": "race-1"})
            for _ in range(8)
        )
    )
    assert {r[0] for r in racing} == {200}
    assert len({r[1]["payment_id"] for r in racing}) == 1
    assert await payments_stack.count("payments") == 2

    # A key belongs to the caller who sent it (here: this client), never to a value in the
    # body: naming another user_id does not make it someone else's key.
    s4, same, h4 = await call(
        payments_stack,
        "POST",
        path,
        json={"user_id": "alice"},
        headers={"Idempotency-Key": "race-1"},
    )
    assert s4 == 200
    assert same["payment_id"] == racing[0][1]["payment_id"]
    assert h4["Idempotent-Replayed"] == "true"


SQL = "'; DROP TABLE payments; --"


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [
        (f"/api/pay/req/{ORDER}", {"json": {"account": "not-a-key"}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"account": SQL}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"account": 12345}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"account": None, "amount_lamports": "1"}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"user_id": SQL}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"user_id": "x" * 500}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"user_id": -1}}, 422),
        (f"/api/pay/req/{ORDER}", {"json": [1, 2]}, 422),
        (f"/api/pay/req/{ORDER}", {"json": {"account": 10**40}}, 422),
        (f"/api/pay/req/{ORDER}", {"data": "account=x"}, 415),
        (
            f"/api/pay/req/{ORDER}",
            {"data": "{", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        (
            f"/api/pay/req/{ORDER}",
            {"data": "x" * 1_000_000, "headers": {"Content-Type": "application/json"}},
            413,
        ),
        (f"/api/pay/req/{ORDER}", {"json": {}, "headers": {"Idempotency-Key": "k" * 300}}, 400),
        ("/api/pay/req/no-such-order", {"json": {}}, 404),
        (f"/api/pay/req/{SQL}", {"json": {}}, 404),
        ("/api/pay/req/" + "a" * 300, {"json": {}}, 404),
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    payments_stack: PaymentsStack, path: str, kwargs: dict[str, Any], status: int
) -> None:
    got, body, _ = await call(payments_stack, "POST", path, **kwargs)
    assert got == status, body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert await payments_stack.count("payments") == 0
    assert await payments_stack.count("outbox") == 0


@pytest.mark.parametrize("payment_id", ["pay_doesnotexist", SQL, "../../etc/passwd", "x" * 100])
async def test_unknown_or_malformed_payment_ids_are_404(
    payments_stack: PaymentsStack, payment_id: str
) -> None:
    from urllib.parse import quote

    status, body, _ = await call(
        payments_stack, "GET", "/api/pay/check-status/" + quote(payment_id, safe="")
    )
    assert status == 404
    assert body["error"]["code"] == "not_found"


async def test_rpc_down_is_503_and_writes_nothing(payments_stack: PaymentsStack) -> None:
    await payments_stack.solana.admin.set_faults(rpc_failure_probability=1.0)
    status, body, headers = await call(
        payments_stack, "POST", f"/api/pay/req/{ORDER}", json={"account": str(Keypair().pubkey())}
    )
    assert status == 503
    assert body["error"]["code"] == "unavailable"
    assert headers["Retry-After"] == "1"
    assert await payments_stack.count("payments") == 0
    # Without an account no chain call is needed: creation still works.
    status, _, _ = await call(payments_stack, "POST", f"/api/pay/req/{ORDER}", json={})
    assert status == 200


async def test_openapi_documents_the_routes(payments_stack: PaymentsStack) -> None:
    status, doc, _ = await call(payments_stack, "GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/catalog", "/api/pay/req/{order_id}", "/api/pay/check-status/{payment_id}"):
        assert path in doc["paths"]
    post = doc["paths"]["/api/pay/req/{order_id}"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][name]["properties"]) == {"account", "user_id"}
    assert doc["components"]["schemas"][name]["additionalProperties"] is False
