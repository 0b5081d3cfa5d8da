"""The sandbox's blocks: `getBlock` (signatures in block order, what a verifier reads to put
receipts in chain order) and the block-time faults a real node shows (null block times, a
skewed clock estimate)."""

from __future__ import annotations

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solders.keypair import Keypair

from tests.fixtures.solana import SOL, SolanaSandbox, airdrop, rpc_call, transfer_tx

pytestmark = pytest.mark.connected


async def test_get_block_lists_signatures_in_block_order(solana_sandbox: SolanaSandbox) -> None:
    sb = solana_sandbox
    await sb.admin.pause_clock()
    payer = Keypair()
    await airdrop(sb, str(payer.pubkey()), 5 * SOL)
    async with AsyncClient(sb.rpc_url) as rpc:
        blockhash = (await rpc.get_latest_blockhash(Finalized)).value.blockhash
        sent = []
        for lamports in (1_000_000, 2_000_000, 3_000_000):
            tx = transfer_tx(payer, Keypair().pubkey(), lamports, blockhash)
            sent.append(str((await rpc.send_transaction(tx)).value))
        slot = (await rpc.get_signature_statuses([tx.signatures[0]])).value[0]
        assert slot is not None
        landed = slot.slot
    config = {"commitment": "finalized", "transactionDetails": "signatures", "rewards": False}
    early = await rpc_call(sb.rpc_url, "getBlock", [landed, config])
    assert early["error"]["code"] == -32004  # not finalized yet
    await sb.finalize()
    block = (await rpc_call(sb.rpc_url, "getBlock", [landed, config]))["result"]
    assert block["signatures"] == sent
    assert block["parentSlot"] == landed - 1
    assert isinstance(block["blockTime"], int)
    assert "rewards" not in block
    none = (await rpc_call(sb.rpc_url, "getBlock", [landed, {"transactionDetails": "none"}]))[
        "result"
    ]
    assert "signatures" not in none
    bad = await rpc_call(sb.rpc_url, "getBlock", [landed, {"commitment": "processed"}])
    assert bad["error"]["code"] == -32602


async def test_block_time_faults(solana_sandbox: SolanaSandbox) -> None:
    sb = solana_sandbox
    payer = Keypair()
    await airdrop(sb, str(payer.pubkey()), 5 * SOL)
    async with AsyncClient(sb.rpc_url) as rpc:
        blockhash = (await rpc.get_latest_blockhash(Finalized)).value.blockhash
        signature = (
            await rpc.send_transaction(transfer_tx(payer, Keypair().pubkey(), SOL, blockhash))
        ).value
        await rpc.confirm_transaction(signature, Confirmed, sleep_seconds=0.02)
    await sb.finalize()
    params = [str(signature), {"commitment": "finalized", "encoding": "json"}]
    normal = (await rpc_call(sb.rpc_url, "getTransaction", params))["result"]
    slot, block_time = normal["slot"], normal["blockTime"]
    assert (await rpc_call(sb.rpc_url, "getBlockTime", [slot]))["result"] == block_time

    await sb.admin.set_faults(null_block_time=True, block_time_offset_seconds=-3600)
    hidden = (await rpc_call(sb.rpc_url, "getTransaction", params))["result"]
    assert hidden["blockTime"] is None
    listed = await rpc_call(
        sb.rpc_url, "getSignaturesForAddress", [str(payer.pubkey()), {"commitment": "finalized"}]
    )
    assert {entry["blockTime"] for entry in listed["result"]} == {None}
    # The slot's own time is still there, as the node estimates it.
    assert (await rpc_call(sb.rpc_url, "getBlockTime", [slot]))["result"] == block_time - 3600
    await sb.admin.reset_faults()
    assert (await rpc_call(sb.rpc_url, "getTransaction", params))["result"]["blockTime"] == (
        block_time
    )
