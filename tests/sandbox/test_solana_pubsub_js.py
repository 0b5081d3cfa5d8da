"""The public Solana JS clients, unmodified, against the sandbox's PubSub WebSocket:
@solana/web3.js 1.x (`sendAndConfirmTransaction`, `onAccountChange`, `onLogs`) and
@solana/kit (`sendAndConfirmTransactionFactory`, `createSolanaRpcSubscriptions`: signature,
account, logs, slot), at `confirmed` and `finalized`.

The scripts are in tests/sandbox/js (ESM, run with `node`, one JSON result line each); the
clients are the versions its package-lock.json pins, installed by
deploy/scripts/ensure-js-clients.sh (run here once per session, and by `make test`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair
from solders.signature import Signature

from sandbox.solana.chain import Commitment
from tests.fixtures.js import run_script
from tests.fixtures.solana import (
    SOL,
    CommitmentWatch,
    SandboxFactory,
    SolanaSandbox,
    airdrop,
    rpc_call,
)

pytestmark = pytest.mark.connected

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "sandbox" / "js"
LAMPORTS = 1_000_000
#: Slots slow enough that a client subscribes before its transaction is confirmed, so that
#: the confirmation travels over the WebSocket (fast slots could let a status poll win).
SLOT_INTERVAL = 0.2


@pytest.fixture
async def sb(solana_sandbox_factory: SandboxFactory) -> SolanaSandbox:
    return await solana_sandbox_factory(slot_interval=SLOT_INTERVAL)


async def funded_argument(sb: SolanaSandbox, commitment: str) -> dict[str, Any]:
    payer = Keypair()
    await airdrop(sb, str(payer.pubkey()), 2 * SOL)
    return {
        "rpcUrl": sb.rpc_url,
        "wsUrl": sb.ws_url,
        "payerSecret": list(bytes(payer)),
        "recipient": str(Keypair().pubkey()),
        "lamports": LAMPORTS,
        "commitment": commitment,
    }


async def statuses(sb: SolanaSandbox, signatures: list[str]) -> list[str]:
    answer = await rpc_call(
        sb.rpc_url, "getSignatureStatuses", [signatures, {"searchTransactionHistory": True}]
    )
    return [status["confirmationStatus"] for status in answer["result"]["value"]]


def reached(commitment: str) -> set[str]:
    return {"confirmed", "finalized"} if commitment == "confirmed" else {"finalized"}


async def no_connections_left(sb: SolanaSandbox) -> dict[str, Any]:
    """The script has exited: its socket is closed and its subscriptions gone."""
    async with asyncio.timeout(5):
        while (stats := await sb.admin.stats())["pubsub_connections"]:  # noqa: ASYNC110 - HTTP polling
            await asyncio.sleep(0.02)
    return stats


def assert_prompt(watch: CommitmentWatch, commitment: str, slot: int, arrived_ms: int) -> None:
    """Arrived soon after the chain brought `slot` to `commitment`: "about a slot", checked
    generously (the real figures are the bench's)."""
    delay = arrived_ms / 1000 - watch.time_reached(Commitment(commitment), slot)
    assert delay < 1.0, delay


@pytest.mark.parametrize("commitment", ["confirmed", "finalized"])
async def test_web3js_confirms_and_watches_over_pubsub(
    js_clients: Path, sb: SolanaSandbox, commitment: str
) -> None:
    argument = await funded_argument(sb, commitment)
    watch = CommitmentWatch(sb)
    result = await run_script(js_clients, "web3_clients.mjs", argument)

    first, second = result["signatures"]
    assert set(await statuses(sb, [first, second])) <= reached(commitment)
    assert result["confirmMs"] < 10_000
    slot = landed_slot(sb, first)

    # onAccountChange and onLogs heard the first transfer once, at the level asked, promptly.
    [account] = result["accountNotifications"]
    assert account["lamports"] == LAMPORTS
    assert account["slot"] >= slot
    assert_prompt(watch, commitment, slot, account["at"])
    [logs] = result["logNotifications"]
    assert logs["signature"] == first
    assert logs["err"] is None
    assert logs["logs"] == [
        "Program 11111111111111111111111111111111 invoke [1]",
        "Program 11111111111111111111111111111111 success",
    ]
    assert logs["slot"] == slot
    assert_prompt(watch, commitment, slot, logs["at"])
    # Removed, they heard nothing of the second.
    assert result["afterRemoval"] == {"account": 1, "logs": 1}
    assert result["slotNotifications"] >= 4

    stats = await no_connections_left(sb)
    assert stats["pubsub_subscriptions"] == 0
    # The confirmations came over the WebSocket (a subscription made before the event).
    assert stats["pubsub_notifications"]["signatureNotification"] >= 1


@pytest.mark.parametrize("commitment", ["confirmed", "finalized"])
async def test_kit_confirms_and_watches_over_pubsub(
    js_clients: Path, sb: SolanaSandbox, commitment: str
) -> None:
    argument = await funded_argument(sb, commitment)
    watch = CommitmentWatch(sb)
    result = await run_script(js_clients, "kit_clients.mjs", argument)

    assert result["errors"] == []
    signatures = result["signatures"]
    assert set(await statuses(sb, signatures)) <= reached(commitment)
    assert result["confirmMs"] < 10_000
    first, second, _third = signatures
    first_slot, second_slot = landed_slot(sb, first), landed_slot(sb, second)

    # signatureNotifications with enableReceivedNotification: received, then the result.
    received, done = result["signatureNotifications"]
    assert received["value"] == "receivedSignature"
    assert done["value"] == {"err": None}
    assert done["slot"] == second_slot
    assert_prompt(watch, commitment, second_slot, done["at"])

    # Account and logs: both transfers before the abort, nothing after.
    assert [n["lamports"] for n in result["accountNotifications"]] == [LAMPORTS, 2 * LAMPORTS]
    assert [n["signature"] for n in result["logNotifications"]] == [first, second]
    for note, slot in zip(result["logNotifications"], [first_slot, second_slot], strict=True):
        assert note["slot"] == slot
        assert_prompt(watch, commitment, slot, note["at"])
    assert_prompt(watch, commitment, first_slot, result["accountNotifications"][0]["at"])
    assert result["afterAbort"] == {"account": 2, "logs": 2}

    # slotNotifications in the node's shape.
    depth = sb.config.finality_depth
    for info in result["slotNotifications"]:
        assert info["parent"] == info["slot"] - 1
        assert info["root"] == info["slot"] - depth

    stats = await no_connections_left(sb)
    assert stats["pubsub_subscriptions"] == 0
    assert stats["pubsub_notifications"]["signatureNotification"] >= 3


def landed_slot(sb: SolanaSandbox, signature: str) -> int:
    record = sb.chain.transaction(Signature.from_string(signature))
    assert record is not None
    return record.slot
