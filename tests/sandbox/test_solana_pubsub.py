"""The Solana sandbox's PubSub WebSocket: the wire protocol as a validator speaks it (message
shapes, integer ids, errors, unsubscribe), notifications per commitment, slow and vanished
clients, and solana-py's WebSocket client driving it unmodified."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment as SolanaCommitment
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.websocket_api import SolanaWsClient
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.rpc.config import RpcTransactionLogsFilterMentions
from solders.rpc.responses import (
    AccountNotification,
    LogsNotification,
    RootNotification,
    SignatureNotification,
    SlotNotification,
)
from solders.signature import Signature
from websockets.asyncio.client import connect as websockets_connect

from sandbox.solana.chain import Commitment
from tests.fixtures.solana import (
    SOL,
    CommitmentWatch,
    SandboxFactory,
    SolanaSandbox,
    airdrop,
    rpc_call,
    send_transfer,
    transfer_tx,
)

pytestmark = pytest.mark.connected

#: Generous: a notification is due within one slot of its event; this only catches "never".
ARRIVAL_TIMEOUT = 5.0


class RawPubSub:
    """A bare JSON-RPC-over-WebSocket client: what goes over the wire, nothing interpreted."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._next_id = 100
        self.responses: dict[Any, dict[str, Any]] = {}
        self.notifications: list[tuple[float, dict[str, Any]]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            for item in payload if isinstance(payload, list) else [payload]:
                if "method" in item:
                    self.notifications.append((time.perf_counter(), item))
                else:
                    self.responses[item.get("id")] = item
            self._arrived.set()

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.ws.close()

    async def _until(self, condition: Any, timeout: float = ARRIVAL_TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def response(self, request_id: Any) -> dict[str, Any]:
        await self._until(lambda: request_id in self.responses)
        return self.responses.pop(request_id)

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        """One request; the whole response object (result or error)."""
        self._next_id += 1
        request_id = self._next_id
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        await self.ws.send_str(json.dumps(body))
        return await self.response(request_id)

    async def subscribe(self, method: str, *params: Any) -> int:
        answer = await self.call(method, *params)
        subscription_id = answer["result"]
        assert type(subscription_id) is int
        return subscription_id

    def received(self, subscription: int) -> list[Any]:
        """The `result` of each notification for `subscription`, in order."""
        return [
            item["params"]["result"]
            for _, item in self.notifications
            if item["params"]["subscription"] == subscription
        ]

    async def wait_for(self, subscription: int, count: int = 1) -> list[Any]:
        await self._until(lambda: len(self.received(subscription)) >= count)
        return self.received(subscription)

    async def silence(self, subscription: int, seconds: float = 0.3) -> None:
        """Nothing more arrives for `subscription` in `seconds` (its notifications so far stay)."""
        before = len(self.received(subscription))
        await asyncio.sleep(seconds)
        assert len(self.received(subscription)) == before


@pytest.fixture
async def sb(solana_sandbox: SolanaSandbox) -> SolanaSandbox:
    """The sandbox with its clock stopped: slots move only when a test advances them."""
    await solana_sandbox.admin.pause_clock()
    return solana_sandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_raw(http: aiohttp.ClientSession, sandbox: SolanaSandbox) -> RawPubSub:
    return RawPubSub(await http.ws_connect(sandbox.ws_url))


@pytest.fixture
async def ws(http: aiohttp.ClientSession, sb: SolanaSandbox) -> AsyncIterator[RawPubSub]:
    client = await open_raw(http, sb)
    try:
        yield client
    finally:
        await client.close()


async def wait_until(condition: Callable[[], bool], timeout: float = ARRIVAL_TIMEOUT) -> None:
    """Poll the in-process sandbox's state (it has no event to wait on for these)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling in-process state that has no event
            await asyncio.sleep(0.01)


async def funded(sb: SolanaSandbox) -> Keypair:
    keypair = Keypair()
    await airdrop(sb, str(keypair.pubkey()), 5 * SOL)
    return keypair


async def pay(
    sb: SolanaSandbox, payer: Keypair, recipient: Pubkey, lamports: int, **config: Any
) -> str:
    """A transfer landed in the current slot (no slot advance); returns its signature."""
    tx = signed_transfer(await latest_blockhash(sb), payer, recipient, lamports)
    return await send(sb, tx_base64(tx), **config)


async def latest_blockhash(sb: SolanaSandbox) -> Hash:
    answer = await rpc_call(sb.rpc_url, "getLatestBlockhash", [{"commitment": "processed"}])
    return Hash.from_string(answer["result"]["value"]["blockhash"])


def signed_transfer(blockhash: Hash, payer: Keypair, recipient: Pubkey, lamports: int) -> Any:
    return transfer_tx(payer, recipient, lamports, blockhash)


def tx_base64(tx: Any) -> str:
    return base64.b64encode(bytes(tx)).decode()


async def send(sb: SolanaSandbox, encoded: str, **config: Any) -> str:
    options = {"encoding": "base64", "preflightCommitment": "processed", **config}
    answer = await rpc_call(sb.rpc_url, "sendTransaction", [encoded, options])
    assert "result" in answer, answer
    signature: str = answer["result"]
    return signature


# --- the wire protocol ------------------------------------------------------------------------


async def test_subscriptions_get_integer_ids_and_unsubscribe_answers_true(
    sb: SolanaSandbox, ws: RawPubSub
) -> None:
    address = str(Keypair().pubkey())
    ids = [
        await ws.subscribe("slotSubscribe"),
        await ws.subscribe("rootSubscribe"),
        await ws.subscribe("accountSubscribe", address),
        await ws.subscribe("logsSubscribe", "all"),
        await ws.subscribe("logsSubscribe", {"mentions": [address]}, {"commitment": "confirmed"}),
        await ws.subscribe("signatureSubscribe", str(Signature.new_unique())),
    ]
    assert len(set(ids)) == len(ids)
    assert (await sb.admin.stats())["pubsub_subscriptions"] == len(ids)
    for method, subscription in zip(
        ["slot", "root", "account", "logs", "logs", "signature"], ids, strict=True
    ):
        answer = await ws.call(f"{method}Unsubscribe", subscription)
        assert answer == {"jsonrpc": "2.0", "result": True, "id": answer["id"]}
    again = await ws.call("slotUnsubscribe", ids[0])
    assert again["error"] == {"code": -32602, "message": "Invalid subscription id."}
    assert (await sb.admin.stats())["pubsub_subscriptions"] == 0


async def test_errors_have_the_validators_codes(
    http: aiohttp.ClientSession, sb: SolanaSandbox, ws: RawPubSub
) -> None:
    async def error_of(method: str, *params: Any) -> dict[str, Any]:
        answer = await ws.call(method, *params)
        assert "result" not in answer, answer
        error: dict[str, Any] = answer["error"]
        return error

    assert await error_of("programSubscribe", str(Keypair().pubkey())) == {
        "code": -32601,
        "message": "Method not found",
    }
    assert await error_of("accountSubscribe", "not-a-key") == {
        "code": -32602,
        "message": "Invalid Request: Invalid pubkey provided",
    }
    assert await error_of("signatureSubscribe", "1111") == {
        "code": -32602,
        "message": "Invalid Request: Invalid signature provided",
    }
    two = [str(Keypair().pubkey()), str(Keypair().pubkey())]
    assert await error_of("logsSubscribe", {"mentions": two}) == {
        "code": -32602,
        "message": "Invalid Request: Only 1 address supported",
    }
    bad_params: list[tuple[str, list[Any]]] = [
        ("accountSubscribe", []),
        ("accountSubscribe", [str(Keypair().pubkey()), {"commitment": "soon"}]),
        ("accountSubscribe", [str(Keypair().pubkey()), {"encoding": "base64+zstd"}]),
        ("logsSubscribe", ["everything"]),
        ("signatureSubscribe", [str(Signature.new_unique()), "confirmed"]),
        ("slotUnsubscribe", ["0"]),
    ]
    for method, params in bad_params:
        assert (await error_of(method, *params))["code"] == -32602, (method, params)

    await ws.send_raw("{not json")
    assert await ws.response(None) == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }
    await ws.send_raw(json.dumps({"id": 7, "method": "slotSubscribe"}))  # no "jsonrpc": "2.0"
    assert (await ws.response(7))["error"]["code"] == -32600

    # A request without an id is a notification: never answered (the clients' keep-alive
    # `ping` is one); a batch is answered as a batch.
    await ws.send_raw(json.dumps({"jsonrpc": "2.0", "method": "ping"}))
    await ws.send_raw(
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": "a", "method": "slotSubscribe"},
                {"jsonrpc": "2.0", "id": "b", "method": "nope"},
            ]
        )
    )
    assert isinstance((await ws.response("a"))["result"], int)
    assert (await ws.response("b"))["error"]["code"] == -32601
    assert set(ws.responses) == set()

    # One connection cannot end another's subscription.
    other = await open_raw(http, sb)
    try:
        theirs = await other.subscribe("slotSubscribe")
        assert (await error_of("slotUnsubscribe", theirs))["message"] == "Invalid subscription id."
    finally:
        await other.close()


async def test_slot_and_root_notifications(sb: SolanaSandbox, ws: RawPubSub) -> None:
    slots = await ws.subscribe("slotSubscribe")
    roots = await ws.subscribe("rootSubscribe")
    start = sb.chain.slot
    await sb.admin.advance(3)
    received = await ws.wait_for(slots, 3)
    depth = sb.config.finality_depth
    assert received == [
        {"parent": slot - 1, "root": slot - depth, "slot": slot}
        for slot in range(start + 1, start + 4)
    ]
    assert await ws.wait_for(roots, 3) == [start + 1 - depth, start + 2 - depth, start + 3 - depth]
    message = next(m for _, m in ws.notifications if m["method"] == "rootNotification")
    assert message == {
        "jsonrpc": "2.0",
        "method": "rootNotification",
        "params": {"result": start + 1 - depth, "subscription": roots},
    }

    assert (await ws.call("slotUnsubscribe", slots))["result"] is True
    await sb.admin.advance(1)
    await ws.wait_for(roots, 4)
    await ws.silence(slots)


async def test_signature_notified_once_per_level_then_gone(
    sb: SolanaSandbox, ws: RawPubSub
) -> None:
    payer = await funded(sb)
    tx = signed_transfer(await latest_blockhash(sb), payer, Keypair().pubkey(), 1_000_000)
    signature = str(tx.signatures[0])
    processed = await ws.subscribe(
        "signatureSubscribe",
        signature,
        {"commitment": "processed", "enableReceivedNotification": True},
    )
    confirmed = await ws.subscribe("signatureSubscribe", signature, {"commitment": "confirmed"})
    finalized = await ws.subscribe("signatureSubscribe", signature)  # default: finalized

    await send(sb, tx_base64(tx))
    slot = sb.chain.slot
    assert await ws.wait_for(processed, 2) == [
        {"context": {"slot": slot}, "value": "receivedSignature"},
        {"context": {"slot": slot}, "value": {"err": None}},
    ]
    await ws.silence(confirmed, 0.1)
    await sb.admin.advance(sb.config.confirmation_depth)
    assert await ws.wait_for(confirmed) == [{"context": {"slot": slot}, "value": {"err": None}}]
    await sb.admin.advance(sb.config.finality_depth - sb.config.confirmation_depth - 1)
    await ws.silence(finalized, 0.1)
    await sb.admin.advance(1)
    assert await ws.wait_for(finalized) == [{"context": {"slot": slot}, "value": {"err": None}}]
    _, first = next((t, m) for t, m in ws.notifications if m["params"]["subscription"] == processed)
    assert first == {
        "jsonrpc": "2.0",
        "method": "signatureNotification",
        "params": {
            "result": {"context": {"slot": slot}, "value": "receivedSignature"},
            "subscription": processed,
        },
    }
    # Each subscription ended with its notification, as on a validator.
    for subscription in (processed, confirmed, finalized):
        answer = await ws.call("signatureUnsubscribe", subscription)
        assert answer["error"]["message"] == "Invalid subscription id."
    assert (await sb.admin.stats())["pubsub_subscriptions"] == 0

    # A signature already at the asked commitment is not announced (ask getSignatureStatuses),
    # while a `processed` subscription made in the transaction's own slot still hears of it.
    late = await ws.subscribe("signatureSubscribe", signature, {"commitment": "confirmed"})
    await sb.admin.advance(1)
    await ws.silence(late, 0.1)
    fresh = await pay(sb, payer, Keypair().pubkey(), 1_000_000)
    same_slot = await ws.subscribe("signatureSubscribe", fresh, {"commitment": "processed"})
    assert await ws.wait_for(same_slot) == [
        {"context": {"slot": sb.chain.slot}, "value": {"err": None}}
    ]


async def test_failed_transaction_notifies_its_error_and_logs(
    sb: SolanaSandbox, ws: RawPubSub
) -> None:
    payer = await funded(sb)
    recipient = Keypair().pubkey()
    tx = signed_transfer(await latest_blockhash(sb), payer, recipient, 500 * SOL)
    signature = await ws.subscribe(
        "signatureSubscribe", str(tx.signatures[0]), {"commitment": "confirmed"}
    )
    logs = await ws.subscribe(
        "logsSubscribe", {"mentions": [str(recipient)]}, {"commitment": "confirmed"}
    )
    await send(sb, tx_base64(tx), skipPreflight=True)
    await sb.admin.advance(1)
    err = {"InstructionError": [0, {"Custom": 1}]}
    [result] = await ws.wait_for(signature)
    assert result["value"] == {"err": err}
    [logged] = await ws.wait_for(logs)
    assert logged["value"]["signature"] == str(tx.signatures[0])
    assert logged["value"]["err"] == err
    assert any("insufficient lamports" in line for line in logged["value"]["logs"])


async def test_account_notified_at_each_commitment_in_its_encoding(
    sb: SolanaSandbox, ws: RawPubSub
) -> None:
    payer = await funded(sb)
    recipient = Keypair().pubkey()
    address = str(recipient)
    processed = await ws.subscribe(
        "accountSubscribe", address, {"commitment": "processed", "encoding": "base64"}
    )
    confirmed = await ws.subscribe(
        "accountSubscribe", address, {"commitment": "confirmed", "encoding": "jsonParsed"}
    )
    finalized = await ws.subscribe("accountSubscribe", address)  # finalized, binary (base-58)

    await pay(sb, payer, recipient, 3_000_000)
    await pay(sb, payer, recipient, 1_000_000)
    slot = sb.chain.slot
    first, second = await ws.wait_for(processed, 2)
    assert first == {
        "context": {"slot": slot},
        "value": {
            "data": ["", "base64"],
            "executable": False,
            "lamports": 3_000_000,
            "owner": "11111111111111111111111111111111",
            "rentEpoch": 2**64 - 1,
            "space": 0,
        },
    }
    assert second["value"]["lamports"] == 4_000_000
    await ws.silence(confirmed, 0.1)

    # Confirmed and finalized: one notification per step, with the state at that level.
    await sb.admin.advance(1)
    [at_confirmed] = await ws.wait_for(confirmed)
    assert at_confirmed["context"] == {"slot": slot}
    assert at_confirmed["value"]["lamports"] == 4_000_000
    assert at_confirmed["value"]["data"] == ["", "base64"]
    await sb.admin.advance(sb.config.finality_depth - 1)
    [at_finalized] = await ws.wait_for(finalized)
    assert at_finalized["value"]["lamports"] == 4_000_000
    assert at_finalized["value"]["data"] == ""  # the legacy default: a bare base-58 string

    # Unsubscribed: nothing more; the others go on.
    assert (await ws.call("accountUnsubscribe", confirmed))["result"] is True
    await pay(sb, payer, recipient, 1_000_000)
    await sb.admin.advance(sb.config.finality_depth + 1)
    assert len(await ws.wait_for(processed, 3)) == 3
    assert len(await ws.wait_for(finalized, 2)) == 2
    await ws.silence(confirmed, 0.1)
    assert len(ws.received(confirmed)) == 1


async def test_logs_all_and_mentions(sb: SolanaSandbox, ws: RawPubSub) -> None:
    payer = await funded(sb)
    recipient, bystander = Keypair().pubkey(), Keypair().pubkey()
    every = await ws.subscribe("logsSubscribe", "all", {"commitment": "processed"})
    mentioning = await ws.subscribe(
        "logsSubscribe", {"mentions": [str(recipient)]}, {"commitment": "finalized"}
    )
    other = await ws.subscribe("logsSubscribe", {"mentions": [str(bystander)]})
    signature = await pay(sb, payer, recipient, 2_000_000)
    slot = sb.chain.slot
    [everything] = await ws.wait_for(every)
    assert everything == {
        "context": {"slot": slot},
        "value": {
            "signature": signature,
            "err": None,
            "logs": [
                "Program 11111111111111111111111111111111 invoke [1]",
                "Program 11111111111111111111111111111111 success",
            ],
        },
    }
    await sb.finalize()
    [mentioned] = await ws.wait_for(mentioning)
    assert mentioned == everything
    await ws.silence(other, 0.1)


# --- slow and vanished clients -----------------------------------------------------------------


async def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_up(
    http: aiohttp.ClientSession, solana_sandbox_factory: SandboxFactory
) -> None:
    sb = await solana_sandbox_factory(pubsub_max_queued=100)
    await sb.admin.pause_clock()
    healthy = await open_raw(http, sb)
    healthy_slots = await healthy.subscribe("slotSubscribe")
    # A client with a tiny receive buffer that subscribes, then never reads again.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", sb.pubsub.port or 0))
    stalled = await websockets_connect(sb.ws_url, sock=sock, max_queue=4)
    try:
        for request_id in range(90):
            request = {"jsonrpc": "2.0", "id": request_id, "method": "slotSubscribe"}
            await stalled.send(json.dumps(request))
        await wait_until(lambda: len(sb.pubsub.registry) == 91)
        start = sb.chain.slot
        longest = 0.0
        # 90 notifications a slot for the stalled client, fewer than its queue holds: it is
        # dropped only once its socket is full and its queue backs up behind it.
        async with asyncio.timeout(30):
            while sb.pubsub.stats.connections_dropped == 0:
                began = time.perf_counter()
                sb.chain.advance(1)  # what the slot clock calls
                longest = max(longest, time.perf_counter() - began)
                await asyncio.sleep(0)
        assert sb.chain.slot - start > 1
        assert len(sb.pubsub.registry) == 1  # the stalled client's 90 are gone
        # Generous: the advance only queues; a stalled socket is never awaited inside it.
        assert longest < 1.0
        # The healthy client hears every slot, up to the newest.
        await wait_until(
            lambda: (
                bool(healthy.received(healthy_slots))
                and healthy.received(healthy_slots)[-1]["slot"] == sb.chain.slot
            )
        )
        assert [n["slot"] for n in healthy.received(healthy_slots)] == list(
            range(start + 1, sb.chain.slot + 1)
        )
        await wait_until(lambda: len(sb.pubsub.connections) == 1)
        stats = await sb.admin.stats()
        assert stats["pubsub_connections_dropped"] == 1
        assert stats["pubsub_subscriptions"] == 1
    finally:
        stalled.transport.abort()
        await healthy.close()


async def test_a_vanished_client_leaves_no_subscriptions(sb: SolanaSandbox) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sb.pubsub.port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "slotSubscribe"}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await wait_until(lambda: len(sb.pubsub.registry) == 1)
    writer.transport.abort()  # gone without a close frame
    sb.chain.advance(1)
    await wait_until(lambda: not sb.pubsub.connections)
    assert (await sb.admin.stats())["pubsub_subscriptions"] == 0


# --- solana-py's own WebSocket client ----------------------------------------------------------


async def drain(client: SolanaWsClient, quiet: float = 0.2) -> None:
    """Read notifications until none has come for `quiet` seconds."""
    while True:
        try:
            async with asyncio.timeout(quiet):
                await client.recv()
        except TimeoutError:
            return


@pytest.mark.parametrize("commitment", [Confirmed, Finalized])
async def test_solana_py_client_subscribes_and_unsubscribes(
    solana_sandbox: SolanaSandbox, commitment: SolanaCommitment
) -> None:
    sb = solana_sandbox  # the clock runs: 50 ms slots
    level = Commitment(commitment)
    watch = CommitmentWatch(sb)
    payer, recipient = Keypair(), Keypair().pubkey()
    async with AsyncClient(sb.rpc_url) as rpc, SolanaWsClient(sb.ws_url) as client:
        await airdrop(sb, str(payer.pubkey()), 2 * SOL)
        account = await client.account_subscribe(
            pubkey=recipient, commitment=commitment, encoding="base64"
        )
        logs = await client.logs_subscribe(
            filter_=RpcTransactionLogsFilterMentions(recipient), commitment=commitment
        )
        slots = await client.slot_subscribe()
        roots = await client.root_subscribe()
        blockhash = (await rpc.get_latest_blockhash(Finalized)).value.blockhash
        tx = transfer_tx(payer, recipient, 1_234_567, blockhash)
        signature = await client.signature_subscribe(
            signature=tx.signatures[0], commitment=commitment
        )
        await rpc.send_raw_transaction(bytes(tx))
        landed = sb.chain.transaction(tx.signatures[0])
        assert landed is not None

        arrived: dict[str, tuple[float, Any]] = {}
        async with asyncio.timeout(ARRIVAL_TIMEOUT * 2):
            while not {"signature", "account", "logs", "slot", "root"} <= set(arrived):
                notification = await client.recv()
                kind = {
                    SignatureNotification: "signature",
                    AccountNotification: "account",
                    LogsNotification: "logs",
                    SlotNotification: "slot",
                    RootNotification: "root",
                }[type(notification)]
                arrived.setdefault(kind, (time.time(), notification))

        _, signature_note = arrived["signature"]
        assert isinstance(signature_note, SignatureNotification)
        assert signature_note.subscription == signature.subscription_id
        assert signature_note.result.context.slot == landed.slot
        _, account_note = arrived["account"]
        assert isinstance(account_note, AccountNotification)
        assert account_note.result.value.lamports == 1_234_567
        _, logs_note = arrived["logs"]
        assert isinstance(logs_note, LogsNotification)
        assert logs_note.result.value.signature == tx.signatures[0]
        assert logs_note.result.value.err is None
        _, slot_note = arrived["slot"]
        assert isinstance(slot_note, SlotNotification)
        assert slot_note.result.parent == slot_note.result.slot - 1
        # Each arrived promptly after the chain brought the transaction to the level asked
        # (the real pace is for the bench: here only "about a slot", generously).
        for kind in ("signature", "account", "logs"):
            delay = arrived[kind][0] - watch.time_reached(level, landed.slot)
            assert delay < 1.0, (kind, delay)

        for subscription in (account, logs, slots, roots):
            await client.unsubscribe(subscription)
        assert (await sb.admin.stats())["pubsub_subscriptions"] == 0
        # What was already on its way is read; after that nothing more arrives, whatever the
        # chain does.
        await drain(client)
        await send_transfer(rpc, payer, str(recipient), 1_000, confirm=True)
        await sb.finalize()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.recv()
