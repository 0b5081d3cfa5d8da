"""The sandbox wallet pays Solana Pay transfer-request and transaction-request URLs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from sandbox.solana.wallet import (
    SolanaPayError,
    TransactionRequest,
    TransferRequest,
    encode_transfer_url,
    parse_solana_pay_url,
    pay_url,
)
from tests.fixtures.solana import (
    MEMO_PROGRAM_ID,
    SOL,
    SolanaSandbox,
    _start_site,
    airdrop,
    rpc_call,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_transfer_url_round_trip_and_validation() -> None:
    reference = Keypair().pubkey()
    request = TransferRequest(
        recipient=Keypair().pubkey(),
        amount_lamports=12_300_000,
        references=[reference],
        label="Axiom & Co",
        message="Thanks!",
        memo="order 42",
    )
    url = encode_transfer_url(request)
    assert "amount=0.0123" in url
    assert "label=Axiom%20%26%20Co" in url
    assert parse_solana_pay_url(url) == request
    link = "https://shop.example/api/pay?order=7&x=1"
    parsed = parse_solana_pay_url("solana:" + quote(link, safe=""))
    assert parsed == TransactionRequest(link=link)
    for bad in (
        "bitcoin:abc",
        "solana:notakey?amount=1",
        f"solana:{reference}?amount=0.0000000001",
    ):
        with pytest.raises(SolanaPayError):
            parse_solana_pay_url(bad)


@pytest.mark.connected
async def test_wallet_pays_transfer_request(solana_sandbox: SolanaSandbox) -> None:
    recipient, reference = Keypair().pubkey(), Keypair().pubkey()
    url = encode_transfer_url(
        TransferRequest(recipient, 25_000_000, [reference], label="Shop", memo="order-9")
    )
    signature = await pay_url(url, solana_sandbox.rpc_url, Keypair())
    await solana_sandbox.finalize()
    found = await rpc_call(solana_sandbox.rpc_url, "getSignaturesForAddress", [str(reference)])
    assert [item["signature"] for item in found["result"]] == [str(signature)]
    assert found["result"][0]["memo"] == "[7] order-9"
    got = (await rpc_call(solana_sandbox.rpc_url, "getTransaction", [str(signature)]))["result"]
    message = got["transaction"]["message"]
    keys = message["accountKeys"]
    memo_ix, transfer_ix = message["instructions"]  # memo right before the transfer, transfer last
    assert keys[memo_ix["programIdIndex"]] == str(MEMO_PROGRAM_ID)
    assert keys[transfer_ix["programIdIndex"]] == "11111111111111111111111111111111"
    assert [keys[i] for i in transfer_ix["accounts"]][2:] == [str(reference)]
    index = keys.index(str(reference))
    header = message["header"]
    assert index >= len(keys) - header["numReadonlyUnsignedAccounts"]  # read-only, non-signer
    at = keys.index(str(recipient))
    assert got["meta"]["postBalances"][at] - got["meta"]["preBalances"][at] == 25_000_000


@pytest.fixture
async def merchant_server(
    solana_sandbox: SolanaSandbox,
) -> AsyncIterator[tuple[str, Keypair, Pubkey, Pubkey]]:
    """A Solana Pay transaction-request endpoint; the merchant pays the fee and pre-signs."""
    merchant, recipient, reference = Keypair(), Keypair().pubkey(), Keypair().pubkey()
    await airdrop(solana_sandbox, str(merchant.pubkey()), SOL)

    async def describe(request: web.Request) -> web.Response:
        return web.json_response({"label": "Axiom shop", "icon": "https://x.example/i.svg"})

    async def build(request: web.Request) -> web.Response:
        account = Pubkey.from_string((await request.json())["account"])
        answer = await rpc_call(solana_sandbox.rpc_url, "getLatestBlockhash")
        blockhash = Hash.from_string(answer["result"]["value"]["blockhash"])
        ix = transfer(TransferParams(from_pubkey=account, to_pubkey=recipient, lamports=3_000_000))
        reference_meta = AccountMeta(reference, is_signer=False, is_writable=False)
        ix = Instruction(ix.program_id, ix.data, [*ix.accounts, reference_meta])
        message = Message.new_with_blockhash([ix], merchant.pubkey(), blockhash)
        own = merchant.sign_message(to_bytes_versioned(message))
        tx = VersionedTransaction.populate(message, [own, Signature.default()])
        body = {"transaction": base64.b64encode(bytes(tx)).decode(), "message": "Thanks"}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/pay", describe)
    app.router.add_post("/pay", build)
    runner, base_url = await _start_site(app)
    try:
        yield base_url + "/pay", merchant, recipient, reference
    finally:
        await runner.cleanup()


@pytest.mark.connected
async def test_wallet_pays_transaction_request_keeping_the_merchant_signature(
    solana_sandbox: SolanaSandbox, merchant_server: tuple[str, Keypair, Pubkey, Pubkey]
) -> None:
    link, merchant, recipient, reference = merchant_server
    payer = Keypair()
    signature = await pay_url("solana:" + quote(link, safe=""), solana_sandbox.rpc_url, payer)
    await solana_sandbox.finalize()
    got = (await rpc_call(solana_sandbox.rpc_url, "getTransaction", [str(signature)]))["result"]
    keys = got["transaction"]["message"]["accountKeys"]
    assert keys[0] == str(merchant.pubkey())  # the merchant is the fee payer
    assert got["transaction"]["signatures"][0] == str(signature)
    assert str(reference) in keys
    meta = got["meta"]
    delta = {
        key: post - pre
        for key, pre, post in zip(keys, meta["preBalances"], meta["postBalances"], strict=True)
    }
    assert delta[str(merchant.pubkey())] == -10_000  # two signatures' fee
    assert delta[str(payer.pubkey())] == -3_000_000
    assert delta[str(recipient)] == 3_000_000


@pytest.mark.connected
async def test_wallet_cli_pays_and_prints_json(
    solana_sandbox: SolanaSandbox, tmp_path: Path
) -> None:
    recipient = Keypair().pubkey()
    url = encode_transfer_url(TransferRequest(recipient, 1_500_000, [Keypair().pubkey()]))
    keypair_file = tmp_path / "id.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox.solana.wallet", "pay", url,
        "--rpc", solana_sandbox.rpc_url, "--keypair", str(keypair_file), "--json",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    printed = json.loads(stdout)
    saved = Keypair.from_bytes(bytes(json.loads(keypair_file.read_text())))
    assert printed["payer"] == str(saved.pubkey())
    status = await rpc_call(
        solana_sandbox.rpc_url, "getSignatureStatuses", [[printed["signature"]]]
    )
    assert status["result"]["value"][0]["err"] is None


@pytest.mark.connected
async def test_module_entry_point_serves_json_rpc() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox.solana", "--port", str(port), "--finality-depth", "2",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "SOLANA_SANDBOX_SLOT_INTERVAL": "0.05"},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        async with asyncio.timeout(20):
            while True:
                try:
                    health = await rpc_call(url, "getHealth")
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        assert health["result"] == "ok"
        processed = (await rpc_call(url, "getSlot", [{"commitment": "processed"}]))["result"]
        finalized = (await rpc_call(url, "getSlot", [{"commitment": "finalized"}]))["result"]
        # finality depth 2; a slot may pass between the two calls (50 ms slots)
        assert 1 <= processed - finalized <= 3
    finally:
        process.terminate()
        await process.wait()
