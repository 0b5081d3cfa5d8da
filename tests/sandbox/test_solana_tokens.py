"""The sandbox's SPL tokens: its test USDC mint, minting to a wallet, token balances in
`getTransaction` as a validator reports them (read by solana-py's own client), and the sandbox
wallet paying an `spl-token` transfer URL."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.signature import Signature

from sandbox.solana.tokens import SANDBOX_USDC_DECIMALS, SANDBOX_USDC_MINT, ata
from sandbox.solana.wallet import (
    SolanaPayError,
    TransferRequest,
    encode_transfer_url,
    parse_solana_pay_url,
    pay_url,
    token_balance,
)
from tests.fixtures.solana import SolanaSandbox, rpc_call, send_token_transfer

pytestmark = pytest.mark.connected


async def _mint(sandbox: SolanaSandbox, body: dict[str, Any]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(sandbox.base_url + "/admin/mint", json=body) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_mint_gives_test_usdc_in_a_real_transaction(solana_sandbox: SolanaSandbox) -> None:
    owner = Keypair().pubkey()
    status, minted = await _mint(solana_sandbox, {"owner": str(owner), "amount": 2_500_000})
    assert status == 200, minted
    await solana_sandbox.finalize()
    async with AsyncClient(solana_sandbox.rpc_url) as rpc:
        assert await token_balance(rpc, owner, SANDBOX_USDC_MINT) == 2_500_000
    answer = await rpc_call(
        solana_sandbox.rpc_url,
        "getTransaction",
        [minted["signature"], {"commitment": "finalized", "encoding": "json"}],
    )
    meta = answer["result"]["meta"]
    assert meta["preTokenBalances"] == []  # the account was created in it
    [after] = meta["postTokenBalances"]
    keys = answer["result"]["transaction"]["message"]["accountKeys"]
    assert keys[after["accountIndex"]] == str(ata(owner, SANDBOX_USDC_MINT))
    assert after["mint"] == str(SANDBOX_USDC_MINT)
    assert after["owner"] == str(owner)
    assert after["programId"] == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
    assert after["uiTokenAmount"] == {
        "amount": "2500000",
        "decimals": SANDBOX_USDC_DECIMALS,
        "uiAmount": 2.5,
        "uiAmountString": "2.5",
    }


@pytest.mark.parametrize(
    "body",
    [{}, {"owner": "nope", "amount": 1}, {"owner": str(Keypair().pubkey()), "amount": 0},
     {"owner": str(Keypair().pubkey()), "amount": True}],
)  # fmt: skip
async def test_mint_refuses_bad_input(solana_sandbox: SolanaSandbox, body: dict[str, Any]) -> None:
    status, answer = await _mint(solana_sandbox, body)
    assert status == 400, answer
    assert "error" in answer


async def test_solana_py_reads_the_token_balances(solana_sandbox: SolanaSandbox) -> None:
    payer, merchant = Keypair(), Keypair().pubkey()
    async with AsyncClient(solana_sandbox.rpc_url) as rpc:
        await rpc.request_airdrop(payer.pubkey(), 10**9)
        solana_sandbox.chain.mint_tokens(payer.pubkey(), 7_000_000)
        signature = await send_token_transfer(rpc, payer, str(merchant), 3_000_000)
        await solana_sandbox.finalize()
        found = (await rpc.get_transaction(signature, max_supported_transaction_version=0)).value
        assert found is not None
        meta = found.transaction.meta
        assert meta is not None
        assert meta.pre_token_balances is not None
        assert meta.post_token_balances is not None
        before = {str(b.owner): int(b.ui_token_amount.amount) for b in meta.pre_token_balances}
        after = {str(b.owner): int(b.ui_token_amount.amount) for b in meta.post_token_balances}
        assert before == {str(payer.pubkey()): 7_000_000}
        assert after == {str(payer.pubkey()): 4_000_000, str(merchant): 3_000_000}


async def test_the_wallet_pays_an_spl_token_url(solana_sandbox: SolanaSandbox) -> None:
    merchant, reference = Keypair().pubkey(), Keypair().pubkey()
    url = encode_transfer_url(
        TransferRequest(
            merchant, None, [reference], memo="order-1", spl_token=SANDBOX_USDC_MINT, amount="1.25"
        )
    )
    assert f"amount=1.25&spl-token={SANDBOX_USDC_MINT}" in url
    parsed = parse_solana_pay_url(url)
    assert isinstance(parsed, TransferRequest)
    assert (parsed.spl_token, parsed.amount, parsed.amount_lamports) == (
        SANDBOX_USDC_MINT,
        "1.25",
        None,
    )
    signature = await pay_url(url, solana_sandbox.rpc_url)  # mints its own test USDC
    await solana_sandbox.finalize()
    async with AsyncClient(solana_sandbox.rpc_url) as rpc:
        assert await token_balance(rpc, merchant, SANDBOX_USDC_MINT) == 1_250_000
        found = (
            await rpc.get_transaction(
                Signature.from_string(str(signature)), max_supported_transaction_version=0
            )
        ).value
    assert found is not None
    keys = [str(k) for k in found.transaction.transaction.message.account_keys]  # type: ignore[union-attr]
    assert str(reference) in keys
    # More decimals than the mint has: refused before anything is signed.
    with pytest.raises(SolanaPayError):
        await pay_url(url.replace("amount=1.25", "amount=1.0000001"), solana_sandbox.rpc_url)
