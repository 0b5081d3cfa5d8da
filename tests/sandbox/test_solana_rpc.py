"""The Solana sandbox answers the real `solana` AsyncClient like a validator would."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx2
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized, Processed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from sandbox.solana.encoding import b58encode
from tests.fixtures.solana import SOL, SolanaSandbox, airdrop, rpc_call, transfer_tx

pytestmark = pytest.mark.connected


@pytest.fixture
async def sb(solana_sandbox: SolanaSandbox) -> SolanaSandbox:
    """The sandbox with its clock stopped: slots move only when a test advances them."""
    await solana_sandbox.admin.pause_clock()
    return solana_sandbox


@pytest.fixture
async def client(sb: SolanaSandbox) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(sb.rpc_url) as rpc:
        yield rpc


@pytest.fixture
async def payer(sb: SolanaSandbox) -> Keypair:
    keypair = Keypair()
    await airdrop(sb, str(keypair.pubkey()), 5 * SOL)
    return keypair


async def blockhash(client: AsyncClient) -> Hash:
    return (await client.get_latest_blockhash(Finalized)).value.blockhash


async def test_health_version_and_context(sb: SolanaSandbox, client: AsyncClient) -> None:
    assert (await rpc_call(sb.rpc_url, "getHealth"))["result"] == "ok"
    version = (await rpc_call(sb.rpc_url, "getVersion"))["result"]
    assert set(version) == {"solana-core", "feature-set"}
    processed = (await client.get_slot(Processed)).value
    confirmed = (await client.get_slot(Confirmed)).value
    finalized = (await client.get_slot(Finalized)).value
    assert processed - confirmed == sb.config.confirmation_depth
    assert processed - finalized == sb.config.finality_depth
    balance = await rpc_call(sb.rpc_url, "getBalance", [str(Keypair().pubkey())])
    assert balance["result"]["value"] == 0
    assert balance["result"]["context"]["slot"] == finalized
    assert isinstance(balance["result"]["context"]["apiVersion"], str)
    await sb.admin.advance(3)
    assert (await client.get_slot(Processed)).value == processed + 3


async def test_transfer_is_invisible_at_finalized_until_its_slots_pass(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    recipient, reference = Keypair().pubkey(), Keypair().pubkey()
    tx = transfer_tx(payer, recipient, 12_345_678, await blockhash(client), references=(reference,))
    signature = (await client.send_transaction(tx)).value
    assert signature == tx.signatures[0]

    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert str(status.confirmation_status) == "TransactionConfirmationStatus.Processed"
    assert (await client.get_transaction(signature, commitment=Finalized)).value is None
    assert (await client.get_transaction(signature, commitment=Confirmed)).value is None
    assert (await client.get_signatures_for_address(reference, commitment=Finalized)).value == []
    assert (await client.get_balance(recipient, Finalized)).value == 0
    assert (await client.get_balance(recipient, Processed)).value == 12_345_678

    await sb.admin.advance(1)  # confirmed, not finalized
    confirmed = (await client.get_transaction(signature, commitment=Confirmed)).value
    assert confirmed is not None
    assert (await client.get_transaction(signature, commitment=Finalized)).value is None
    assert (await client.get_balance(recipient, Confirmed)).value == 12_345_678
    assert (await client.get_balance(recipient, Finalized)).value == 0
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.confirmations == 1
    assert str(status.confirmation_status).endswith("Confirmed")

    await sb.admin.advance(sb.config.finality_depth - 1)
    final = (await client.get_transaction(signature, commitment=Finalized)).value
    assert final is not None
    meta = final.transaction.meta
    assert meta is not None
    assert meta.err is None
    assert meta.fee == 5000
    keys = [str(key) for key in final.transaction.transaction.message.account_keys]  # type: ignore[union-attr]
    position = keys.index(str(recipient))
    assert meta.post_balances[position] - meta.pre_balances[position] == 12_345_678
    assert final.block_time is not None
    assert abs(final.block_time - time.time()) < 60
    assert (await client.get_balance(recipient, Finalized)).value == 12_345_678
    found = (await client.get_signatures_for_address(reference, commitment=Finalized)).value
    assert [item.signature for item in found] == [signature]
    assert found[0].slot == final.slot
    assert found[0].err is None
    assert str(found[0].confirmation_status).endswith("Finalized")
    status = (await client.get_signature_statuses([signature])).value[0]
    assert status is not None
    assert status.confirmations is None


async def test_get_transaction_refuses_processed_commitment(sb: SolanaSandbox) -> None:
    answer = await rpc_call(
        sb.rpc_url, "getTransaction", [str(Signature.default()), {"commitment": "processed"}]
    )
    assert answer["error"]["code"] == -32602
    assert "Method does not support commitment below `confirmed`" in answer["error"]["message"]


async def test_signatures_for_address_newest_first_with_paging_and_memo(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    reference = Keypair().pubkey()
    sent: list[Signature] = []
    for i in range(4):
        tx = transfer_tx(
            payer, Keypair().pubkey(), 1_000_000 + i, await blockhash(client),
            references=(reference,), memo=f"order-{i}",
        )  # fmt: skip
        sent.append((await client.send_transaction(tx)).value)
        await sb.admin.advance(1)
    await sb.finalize()
    newest_first = list(reversed(sent))
    items = (await client.get_signatures_for_address(reference)).value
    assert [item.signature for item in items] == newest_first
    assert items[0].memo == "[7] order-3"
    slots = [item.slot for item in items]
    assert slots == sorted(slots, reverse=True)
    page = (await client.get_signatures_for_address(reference, limit=2)).value
    assert [item.signature for item in page] == newest_first[:2]
    after = (await client.get_signatures_for_address(reference, before=newest_first[1])).value
    assert [item.signature for item in after] == newest_first[2:]
    upto = (await client.get_signatures_for_address(reference, until=newest_first[2])).value
    assert [item.signature for item in upto] == newest_first[:2]
    too_many = await rpc_call(
        sb.rpc_url, "getSignaturesForAddress", [str(reference), {"limit": 1001}]
    )
    assert too_many["error"]["code"] == -32602


async def test_bad_signature_is_rejected(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    tx = transfer_tx(payer, Keypair().pubkey(), 1_000_000, await blockhash(client))
    forged = VersionedTransaction.populate(tx.message, [Keypair().sign_message(b"not it")])
    with pytest.raises(RPCException) as caught:
        await client.send_transaction(forged)
    assert "TransactionSignatureVerificationFailure" in str(caught.value)
    raw = await rpc_call(sb.rpc_url, "sendTransaction", [_b64(forged), {"encoding": "base64"}])
    assert raw["error"] == {"code": -32003, "message": "Transaction signature verification failure"}
    # Without preflight the node accepts it for forwarding, and the leader drops it.
    skipped = await client.send_transaction(forged, TxOpts(skip_preflight=True))
    await sb.finalize()
    assert (await client.get_signature_statuses([skipped.value], True)).value == [None]
    assert (await client.get_balance(payer.pubkey(), Processed)).value == 5 * SOL


async def test_stale_or_unknown_blockhash_is_rejected(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    old = await blockhash(client)
    await sb.admin.advance(sb.config.blockhash_max_age + 1)
    for recent in (old, Hash.new_unique()):
        tx = transfer_tx(payer, Keypair().pubkey(), 1_000_000, recent)
        raw = await rpc_call(sb.rpc_url, "sendTransaction", [_b64(tx), {"encoding": "base64"}])
        assert raw["error"]["code"] == -32002
        assert raw["error"]["message"] == "Transaction simulation failed: Blockhash not found"
        assert raw["error"]["data"]["err"] == "BlockhashNotFound"
        skipped = await client.send_transaction(tx, TxOpts(skip_preflight=True))
        await sb.admin.advance(1)
        assert (await client.get_signature_statuses([skipped.value])).value == [None]
    # A blockhash the finalized bank does not know yet fails preflight at `finalized`...
    fresh = (await client.get_latest_blockhash(Processed)).value.blockhash
    tx = transfer_tx(payer, Keypair().pubkey(), 1_000_000, fresh)
    with pytest.raises(RPCException, match="Blockhash not found"):
        await client.send_transaction(tx)
    # ...and passes at `processed`, as on a real node.
    opts = TxOpts(preflight_commitment=Processed)
    assert (await client.send_transaction(tx, opts)).value == tx.signatures[0]


async def test_failed_transaction_lands_with_its_error_and_fee(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    tx = transfer_tx(payer, Keypair().pubkey(), 50 * SOL, await blockhash(client))
    raw = await rpc_call(sb.rpc_url, "sendTransaction", [_b58(tx)])  # default encoding base58
    assert raw["error"]["code"] == -32002
    assert raw["error"]["message"] == (
        "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert raw["error"]["data"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert any("insufficient lamports" in line for line in raw["error"]["data"]["logs"])
    signature = (await client.send_transaction(tx, TxOpts(skip_preflight=True))).value
    await sb.finalize()
    got = await rpc_call(sb.rpc_url, "getTransaction", [str(signature), {"encoding": "json"}])
    meta = got["result"]["meta"]
    assert meta["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert meta["status"] == {"Err": {"InstructionError": [0, {"Custom": 1}]}}
    assert meta["preBalances"][0] - meta["postBalances"][0] == meta["fee"] == 5000
    statuses = (await client.get_signature_statuses([signature])).value
    assert statuses[0] is not None
    assert statuses[0].err is not None
    listed = (await client.get_signatures_for_address(payer.pubkey())).value
    assert listed[0].signature == signature
    assert listed[0].err is not None


async def test_versioned_transaction_needs_max_supported_version(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    recipient = Keypair().pubkey()
    v0 = transfer_tx(payer, recipient, 2_000_000, await blockhash(client), v0=True)
    legacy = transfer_tx(payer, recipient, 3_000_000, await blockhash(client))
    v0_sig = (await client.send_transaction(v0)).value
    legacy_sig = (await client.send_transaction(legacy)).value
    await sb.finalize()
    refused = await rpc_call(sb.rpc_url, "getTransaction", [str(v0_sig), "json"])
    assert refused["error"]["code"] == -32015
    assert '"maxSupportedTransactionVersion": 0' in refused["error"]["message"]
    got = await client.get_transaction(v0_sig, max_supported_transaction_version=0)
    assert got.value is not None
    assert got.value.transaction.version == 0
    as_b64 = await rpc_call(
        sb.rpc_url,
        "getTransaction",
        [str(v0_sig), {"encoding": "base64", "maxSupportedTransactionVersion": 0}],
    )
    wire, encoding = as_b64["result"]["transaction"]
    assert encoding == "base64"
    assert VersionedTransaction.from_bytes(_unb64(wire)) == v0
    assert as_b64["result"]["meta"]["loadedAddresses"] == {"writable": [], "readonly": []}
    plain = await rpc_call(sb.rpc_url, "getTransaction", [str(legacy_sig)])
    assert "version" not in plain["result"]
    with_version = await rpc_call(
        sb.rpc_url, "getTransaction", [str(legacy_sig), {"maxSupportedTransactionVersion": 0}]
    )
    assert with_version["result"]["version"] == "legacy"
    assert (await client.get_balance(recipient)).value == 5_000_000


async def test_json_rpc_envelope_errors(sb: SolanaSandbox) -> None:
    assert (await rpc_call(sb.rpc_url, "getNothing"))["error"] == {
        "code": -32601,
        "message": "Method not found",
    }
    bad_key = await rpc_call(sb.rpc_url, "getBalance", ["not-a-key"])
    assert bad_key["error"]["code"] == -32602
    missing = await rpc_call(sb.rpc_url, "getBalance", [])
    assert missing["error"]["code"] == -32602
    async with aiohttp.ClientSession() as session:
        async with session.post(sb.rpc_url, data=b"{not json") as response:
            assert (await response.json())["error"]["code"] == -32700
        async with session.post(sb.rpc_url, json={"jsonrpc": "1.0", "method": "getSlot"}) as r:
            answer = await r.json()
            assert answer["error"]["code"] == -32600
            assert answer["id"] is None
        async with session.post(sb.rpc_url, json=[]) as response:
            assert (await response.json())["error"]["code"] == -32600
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "getSlot"},
            {"jsonrpc": "2.0", "id": "two", "method": "nope"},
            {"jsonrpc": "2.0", "method": "getSlot"},  # a notification: no answer
        ]
        async with session.post(sb.rpc_url, json=batch) as response:
            answers = await response.json()
    assert [a["id"] for a in answers] == [1, "two"]
    assert isinstance(answers[0]["result"], int)
    assert answers[1]["error"]["code"] == -32601


async def test_balance_history_per_commitment(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    recipient = Keypair().pubkey()
    await client.send_transaction(transfer_tx(payer, recipient, 1_000_000, await blockhash(client)))
    await sb.admin.advance(2)
    await client.send_transaction(transfer_tx(payer, recipient, 2_000_000, await blockhash(client)))
    assert (await client.get_balance(recipient, Processed)).value == 3_000_000
    assert (await client.get_balance(recipient, Confirmed)).value == 1_000_000
    assert (await client.get_balance(recipient, Finalized)).value == 0
    await sb.admin.advance(sb.config.finality_depth - 2)
    assert (await client.get_balance(recipient, Finalized)).value == 1_000_000
    account = await rpc_call(
        sb.rpc_url,
        "getAccountInfo",
        [str(recipient), {"encoding": "base64", "commitment": "finalized"}],
    )
    value = account["result"]["value"]
    assert value["lamports"] == 1_000_000
    assert value["data"] == ["", "base64"]
    assert value["owner"] == "11111111111111111111111111111111"
    assert value["space"] == 0
    await sb.admin.advance(2)
    info = (await client.get_account_info(recipient)).value
    assert info is not None
    assert info.lamports == 3_000_000
    parsed = await rpc_call(
        sb.rpc_url, "getAccountInfo", [str(recipient), {"encoding": "jsonParsed"}]
    )
    assert parsed["result"]["value"]["data"] == ["", "base64"]
    assert (await client.get_account_info(Keypair().pubkey())).value is None


async def test_status_cache_needs_search_transaction_history_for_old_signatures(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    signature = (
        await client.send_transaction(
            transfer_tx(payer, Keypair().pubkey(), 1_000_000, await blockhash(client))
        )
    ).value
    await sb.admin.advance(sb.config.status_cache_slots + 1)
    assert (await client.get_signature_statuses([signature])).value == [None]
    found = (
        await client.get_signature_statuses([signature], search_transaction_history=True)
    ).value
    assert found[0] is not None
    assert str(found[0].confirmation_status).endswith("Finalized")


async def test_fees_rent_blockhash_validity_and_simulation(
    sb: SolanaSandbox, client: AsyncClient, payer: Keypair
) -> None:
    recent = await blockhash(client)
    tx = transfer_tx(payer, Keypair().pubkey(), 1_000_000, recent)
    fee = await rpc_call(
        sb.rpc_url, "getFeeForMessage", [_b64_message(tx), {"commitment": "finalized"}]
    )
    assert fee["result"]["value"] == 5000
    assert (await client.get_minimum_balance_for_rent_exemption(0)).value == 890_880
    assert (await rpc_call(sb.rpc_url, "isBlockhashValid", [str(recent)]))["result"]["value"]
    simulated = (await client.simulate_transaction(tx)).value
    assert simulated.err is None
    assert simulated.units_consumed == 150
    assert simulated.logs is not None
    assert simulated.logs[-1].endswith("success")
    await sb.admin.advance(sb.config.blockhash_max_age + sb.config.finality_depth + 1)
    valid = await rpc_call(sb.rpc_url, "isBlockhashValid", [str(recent)])
    assert valid["result"]["value"] is False
    fee = await rpc_call(sb.rpc_url, "getFeeForMessage", [_b64_message(tx)])
    assert fee["result"]["value"] is None
    stale = (await client.simulate_transaction(tx)).value
    assert stale.err is not None
    assert "BlockhashNotFound" in str(stale.err)
    replaced = (await client.simulate_transaction(tx, replace_recent_blockhash=True)).value
    assert replaced.err is None
    assert replaced.replacement_blockhash is not None


async def test_rpc_faults_latency_failure_and_seeded_determinism(sb: SolanaSandbox) -> None:
    await sb.admin.set_faults(rpc_latency_seconds=0.2)
    started = time.monotonic()
    assert (await rpc_call(sb.rpc_url, "getHealth"))["result"] == "ok"
    assert time.monotonic() - started >= 0.2
    await sb.admin.set_faults(rpc_latency_seconds=0, rpc_failure_probability=1.0)
    async with AsyncClient(sb.rpc_url) as rpc:
        with pytest.raises((SolanaRpcException, httpx2.HTTPStatusError)):
            await rpc.get_slot()
    await sb.admin.set_faults(rpc_failure_mode="node_unhealthy")
    unhealthy = await rpc_call(sb.rpc_url, "getSlot")
    assert unhealthy["error"]["code"] == -32005
    assert unhealthy["id"] == 1

    async def pattern() -> list[bool]:
        return ["error" in await rpc_call(sb.rpc_url, "getHealth") for _ in range(20)]

    await sb.admin.set_faults(rpc_failure_probability=0.5, seed=1234)
    first = await pattern()
    await sb.admin.set_faults(seed=1234)
    assert await pattern() == first
    assert any(first)
    assert not all(first)
    await sb.admin.reset_faults()
    assert (await rpc_call(sb.rpc_url, "getHealth"))["result"] == "ok"


async def test_unknown_fault_setting_is_refused(sb: SolanaSandbox) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(sb.base_url + "/admin/faults", json={"nope": 1}) as response:
            assert response.status == 400
            assert "unknown fault setting" in (await response.json())["error"]
        async with session.post(
            sb.base_url + "/admin/faults", json={"webhook_drop_probability": 2}
        ) as response:
            assert response.status == 400


def _b64(tx: VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _b58(tx: VersionedTransaction) -> str:
    return b58encode(bytes(tx))


def _b64_message(tx: VersionedTransaction) -> str:
    return base64.b64encode(to_bytes_versioned(tx.message)).decode()
