"""Helius-style webhooks from the Solana sandbox: formats, commitment, retries and faults."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from tests.fixtures.solana import (
    SOL,
    SandboxFactory,
    SolanaSandbox,
    WebhookReceiver,
    airdrop,
    rpc_call,
    transfer_tx,
)

pytestmark = pytest.mark.connected

SECRET = "hook-secret-123"


async def paused(factory: SandboxFactory, **changes: Any) -> SolanaSandbox:
    sandbox = await factory(**changes)
    await sandbox.admin.pause_clock()
    return sandbox


async def pay(
    sb: SolanaSandbox,
    payer: Keypair,
    recipient: Pubkey,
    lamports: int,
    *,
    skip_preflight: bool = False,
) -> str:
    """Send a transfer at the current slot (no slot advance); returns its signature."""
    bh = (await rpc_call(sb.rpc_url, "getLatestBlockhash", [{"commitment": "processed"}]))["result"]
    tx = transfer_tx(payer, recipient, lamports, Hash.from_string(bh["value"]["blockhash"]))
    answer = await rpc_call(
        sb.rpc_url,
        "sendTransaction",
        [
            base64.b64encode(bytes(tx)).decode(),
            {
                "encoding": "base64",
                "skipPreflight": skip_preflight,
                "preflightCommitment": "processed",
            },
        ],
    )
    assert "result" in answer, answer
    signature: str = answer["result"]
    return signature


async def funded(sb: SolanaSandbox) -> Keypair:
    keypair = Keypair()
    await airdrop(sb, str(keypair.pubkey()), 5 * SOL)
    return keypair


async def test_enhanced_webhook_arrives_only_after_finalization_with_auth_header(
    solana_sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = await paused(solana_sandbox_factory)
    payer, recipient = await funded(sb), Keypair().pubkey()
    hook = await sb.admin.register_webhook(
        webhook_receiver.url, [str(recipient)], auth_header=SECRET
    )
    assert hook["webhookID"]
    signature = await pay(sb, payer, recipient, 7_000_000)
    await sb.admin.advance(sb.config.finality_depth - 1)  # confirmed, not yet finalized
    await sb.webhooks.idle()
    assert webhook_receiver.received == []
    await sb.admin.advance(1)
    [delivery] = await webhook_receiver.wait_for(1)
    assert delivery.authorization == SECRET
    [item] = delivery.body
    assert item["signature"] == signature
    assert item["type"] == "TRANSFER"
    assert item["source"] == "SYSTEM_PROGRAM"
    assert item["fee"] == 5000
    assert item["feePayer"] == str(payer.pubkey())
    assert item["nativeTransfers"] == [
        {
            "fromUserAccount": str(payer.pubkey()),
            "toUserAccount": str(recipient),
            "amount": 7_000_000,
        }
    ]
    changes = {entry["account"]: entry["nativeBalanceChange"] for entry in item["accountData"]}
    assert changes[str(recipient)] == 7_000_000
    assert changes[str(payer.pubkey())] == -7_005_000
    assert item["tokenTransfers"] == []
    assert item["events"] == {}
    assert "transferred 0.007 SOL" in item["description"]
    tx = await rpc_call(sb.rpc_url, "getTransaction", [signature])
    assert item["slot"] == tx["result"]["slot"]
    assert item["timestamp"] == tx["result"]["blockTime"]


async def test_raw_webhook_at_confirmed_carries_failed_transactions_enhanced_does_not(
    solana_sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = await paused(solana_sandbox_factory, webhook_commitment="confirmed")
    payer, recipient = await funded(sb), Keypair().pubkey()
    await sb.admin.register_webhook(
        webhook_receiver.url, [str(payer.pubkey())], webhook_type="raw", auth_header="raw"
    )
    await sb.admin.register_webhook(
        webhook_receiver.url, [str(payer.pubkey())], webhook_type="enhanced", auth_header="enh"
    )
    good = await pay(sb, payer, recipient, 2_000_000)
    bad = await pay(sb, payer, Keypair().pubkey(), 500 * SOL, skip_preflight=True)
    await sb.admin.advance(1)
    await webhook_receiver.wait_for(2)
    by_auth = {delivery.authorization: delivery.body for delivery in webhook_receiver.received}
    raw = {item["transaction"]["signatures"][0]: item for item in by_auth["raw"]}
    assert set(raw) == {good, bad}
    assert raw[bad]["meta"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert raw[good]["meta"]["err"] is None
    assert [raw[good]["indexWithinBlock"], raw[bad]["indexWithinBlock"]] == [0, 1]
    assert raw[good]["version"] == "legacy"
    assert raw[good]["blockTime"] > 0
    assert raw[good]["meta"]["preTokenBalances"] == []
    assert [item["signature"] for item in by_auth["enh"]] == [good]
    # Delivered at confirmed: finalized queries do not see it yet.
    assert (await rpc_call(sb.rpc_url, "getTransaction", [good]))["result"] is None


async def test_webhook_retried_then_delivered_or_dropped(
    solana_sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = await paused(solana_sandbox_factory, webhook_commitment="confirmed")
    payer = await funded(sb)
    await sb.admin.register_webhook(webhook_receiver.url, [str(payer.pubkey())])
    webhook_receiver.statuses = [503]
    await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    await sb.admin.advance(1)
    await webhook_receiver.wait_for(1)
    assert webhook_receiver.attempts == 2
    webhook_receiver.statuses = [500, 500, 500]
    await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    await sb.admin.advance(1)
    await sb.webhooks.idle()
    assert webhook_receiver.attempts == 5
    assert len(webhook_receiver.received) == 1
    stats = await sb.admin.stats()
    assert stats["webhooks_sent"] == 1
    assert stats["webhooks_failed"] == 1
    assert stats["webhook_failed_attempts"] == 4


async def test_unreachable_webhook_is_retried_then_dropped(
    solana_sandbox_factory: SandboxFactory,
) -> None:
    sb = await paused(solana_sandbox_factory, webhook_commitment="confirmed")
    payer = await funded(sb)
    await sb.admin.register_webhook("http://127.0.0.1:9/nothing", [str(payer.pubkey())])
    await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    await sb.admin.advance(1)
    await sb.webhooks.idle()
    stats = await sb.admin.stats()
    assert stats["webhook_attempts"] == sb.config.webhook_max_attempts
    assert stats["webhooks_failed"] == 1
    assert stats["webhooks_sent"] == 0


async def test_fault_drop_all_and_drop_probability(
    solana_sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = await paused(solana_sandbox_factory, webhook_commitment="confirmed")
    payer = await funded(sb)
    await sb.admin.register_webhook(webhook_receiver.url, [str(payer.pubkey())])
    await sb.admin.set_faults(webhook_drop_all=True)
    await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    await sb.admin.advance(1)
    await sb.webhooks.idle()
    assert webhook_receiver.attempts == 0
    assert (await sb.admin.stats())["webhooks_dropped"] == 1

    await sb.admin.set_faults(webhook_drop_all=False, webhook_drop_probability=0.5, seed=7)
    for _ in range(16):
        await pay(sb, payer, Keypair().pubkey(), 1_000_000)
        await sb.admin.advance(1)
    await sb.webhooks.idle()
    stats = await sb.admin.stats()
    dropped = stats["webhooks_dropped"] - 1
    assert 0 < dropped < 16
    assert stats["webhooks_sent"] == 16 - dropped == len(webhook_receiver.received)


async def test_fault_duplicate_and_delay(
    solana_sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = await paused(solana_sandbox_factory, webhook_commitment="confirmed")
    payer = await funded(sb)
    await sb.admin.register_webhook(webhook_receiver.url, [str(payer.pubkey())])
    await sb.admin.set_faults(webhook_duplicate=3, webhook_delay_seconds=0.3)
    signature = await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    started = time.monotonic()
    await sb.admin.advance(1)
    await asyncio.sleep(0.15)
    assert webhook_receiver.received == []
    deliveries = await webhook_receiver.wait_for(3)
    assert time.monotonic() - started >= 0.3
    assert [[item["signature"] for item in d.body] for d in deliveries] == [[signature]] * 3


async def test_fault_reorder_shuffles_batches_and_releases_them_out_of_order(
    solana_sandbox_factory: SandboxFactory, webhook_receiver: WebhookReceiver
) -> None:
    sb = await paused(solana_sandbox_factory, webhook_commitment="confirmed")
    payer = await funded(sb)
    await sb.admin.register_webhook(webhook_receiver.url, [str(payer.pubkey())])
    await sb.admin.set_faults(webhook_reorder=True, webhook_reorder_window=2, seed=3)
    first_batch = [await pay(sb, payer, Keypair().pubkey(), 1_000_000) for _ in range(6)]
    await sb.admin.advance(1)
    await sb.webhooks.idle()
    assert webhook_receiver.received == []  # held, waiting for a second batch
    second = await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    await sb.admin.advance(1)
    deliveries = await webhook_receiver.wait_for(2)
    orders = [[item["signature"] for item in delivery.body] for delivery in deliveries]
    assert orders[0] == [second]  # the newer batch arrives first
    assert sorted(orders[1]) == sorted(first_batch)
    assert orders[1] != first_batch  # and the older one is shuffled


async def test_webhook_api_crud_and_api_key(solana_sandbox_factory: SandboxFactory) -> None:
    sb = await solana_sandbox_factory(helius_api_key="k-123")
    address = str(Keypair().pubkey())
    body = {
        "webhookURL": "http://127.0.0.1:1/x",
        "accountAddresses": [address],
        "webhookType": "raw",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(sb.webhook_url, json=body) as response:
            assert response.status == 401
        async with session.post(sb.webhook_url + "?api-key=k-123", json=body) as response:
            created = await response.json()
            assert response.status == 200
        assert created["accountAddresses"] == [address]
        assert created["webhookType"] == "raw"
        one = f"{sb.webhook_url}/{created['webhookID']}?api-key=k-123"
        async with session.get(one) as response:
            assert (await response.json())["webhookID"] == created["webhookID"]
        async with session.post(
            sb.webhook_url + "?api-key=k-123", json={**body, "webhookType": "discord"}
        ) as response:
            assert response.status == 400
        async with session.delete(one) as response:
            assert response.status == 200
        async with session.get(one) as response:
            assert response.status == 404
