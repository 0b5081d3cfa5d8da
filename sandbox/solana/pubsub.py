"""Solana's PubSub WebSocket API, served on its own port as a validator does (RPC port + 1):
JSON-RPC 2.0 over WebSocket text frames, subscriptions answered with integer ids, then
`<kind>Notification` messages pushed as the chain moves (subscriptions.py builds them).

Each connection has one bounded outgoing queue and one writer task. The chain only ever
appends to that queue; a client that lets it fill up is disconnected, so a slow or vanished
client holds up neither the slot clock nor the other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from solders.pubkey import Pubkey
from solders.signature import Signature

from axiom_shared.logging import get_logger
from sandbox.solana.chain import Chain
from sandbox.solana.config import SandboxConfig
from sandbox.solana.encoding import Json, b58decode
from sandbox.solana.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    commitment_param,
    config_param,
    error_response,
    invalid_params,
    param,
    valid_id,
)
from sandbox.solana.subscriptions import (
    AccountEncoding,
    AccountSubscription,
    LogsSubscription,
    RootSubscription,
    SignatureSubscription,
    SlotSubscription,
    Subscription,
    SubscriptionRegistry,
)

log = get_logger(__name__)

#: Seconds a dropped or closing client gets to take its close frame before the socket is cut.
CLOSE_TIMEOUT = 1.0


class PubSubConnection:
    """One WebSocket client: its queue of outgoing messages and the task that writes them."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        max_queued: int,
        peer: str,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.max_queued = max_queued
        self.peer = peer
        self.closed = False
        self.on_overflow: Callable[[PubSubConnection], None] = lambda _connection: None
        self._outbox: deque[str] = deque()
        self._ready = asyncio.Event()

    def send(self, text: str) -> None:
        """Queue a message; never blocks. A full queue drops the connection instead."""
        if self.closed:
            return
        if len(self._outbox) >= self.max_queued:
            self.closed = True
            self._outbox.clear()
            self._ready.set()
            self.on_overflow(self)
            return
        self._outbox.append(text)
        self._ready.set()

    async def write_loop(self) -> None:
        while not self.closed:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox and not self.closed:
                await self.ws.send_str(self._outbox.popleft())

    async def close(self, code: int, reason: str) -> None:
        """Close with a close frame if the client takes it in time, else cut the socket (a
        plain close would wait for the unread bytes to drain: forever, for a stalled peer)."""
        self.closed = True
        self._ready.set()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT)
            return
        except (TimeoutError, ConnectionError):
            pass
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()


@dataclass
class PubSubStats:
    #: Clients disconnected for falling behind.
    connections_dropped: int = 0


class PubSubServer:
    """The WebSocket server and its JSON-RPC methods, over one SubscriptionRegistry."""

    def __init__(self, chain: Chain, config: SandboxConfig) -> None:
        self.chain = chain
        self.config = config
        self.registry = SubscriptionRegistry(chain)
        self.connections: set[PubSubConnection] = set()
        self.stats = PubSubStats()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.methods: dict[str, Callable[[PubSubConnection, list[Json]], Subscription | bool]] = {
            "accountSubscribe": self.account_subscribe,
            "logsSubscribe": self.logs_subscribe,
            "signatureSubscribe": self.signature_subscribe,
            "slotSubscribe": self.slot_subscribe,
            "rootSubscribe": self.root_subscribe,
            # Any of them ends any subscription of the connection's, as on a validator.
            "accountUnsubscribe": self.unsubscribe,
            "logsUnsubscribe": self.unsubscribe,
            "signatureUnsubscribe": self.unsubscribe,
            "slotUnsubscribe": self.unsubscribe,
            "rootUnsubscribe": self.unsubscribe,
        }

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the PubSub server is not started")
        return f"ws://{self.config.host}:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the configured port; when it was only the default (RPC port + 1) and is
        taken, on a free one instead (logged, and shown in /admin/stats)."""
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.websocket)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        wanted = self.config.pubsub_port_wanted
        try:
            site = web.TCPSite(self._runner, self.config.host, wanted)
            await site.start()
        except OSError:
            if self.config.pubsub_port is not None or wanted == 0:
                await self._runner.cleanup()
                raise
            log.warning("pubsub_port_taken", port=wanted)
            site = web.TCPSite(self._runner, self.config.host, 0)
            await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await asyncio.gather(
            *(c.close(WSCloseCode.GOING_AWAY, "server stopping") for c in list(self.connections)),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one connection --------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1024 * 1024)
        await ws.prepare(request)
        connection = PubSubConnection(
            ws, request.transport, self.config.pubsub_max_queued, str(request.remote)
        )
        connection.on_overflow = self._overflowed
        self.connections.add(connection)
        writer = asyncio.create_task(self._write(connection), name="solana-pubsub-writer")
        try:
            async for message in ws:
                if connection.closed:
                    break
                if message.type is WSMsgType.TEXT:
                    self.handle_text(connection, message.data)
                elif message.type is WSMsgType.BINARY:
                    self.handle_text(connection, message.data.decode("utf-8", errors="replace"))
        finally:
            connection.closed = True
            self.registry.remove_all(connection)
            self.connections.discard(connection)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _write(self, connection: PubSubConnection) -> None:
        try:
            await connection.write_loop()
        except Exception as exc:  # the client went away mid-send; the reader ends too
            connection.closed = True
            self.registry.remove_all(connection)
            log.info("pubsub_client_gone", peer=connection.peer, reason=repr(exc))

    def _overflowed(self, connection: PubSubConnection) -> None:
        # Called from inside the chain's event: forget the client now, close it later.
        self.stats.connections_dropped += 1
        self.registry.remove_all(connection)
        log.warning(
            "pubsub_client_dropped",
            peer=connection.peer,
            reason="notification queue full",
            max_queued=connection.max_queued,
        )
        self._spawn(connection.close(WSCloseCode.POLICY_VIOLATION, "notification queue overflow"))

    # --- JSON-RPC --------------------------------------------------------------------------

    def handle_text(self, connection: PubSubConnection, text: str) -> None:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            connection.send(_dump(error_response(None, RpcError(PARSE_ERROR, "Parse error"))))
            return
        made: list[Subscription] = []
        if isinstance(payload, list):
            if not payload:
                answer: Json = error_response(None, RpcError(INVALID_REQUEST, "Invalid request"))
            else:
                responses = [self.handle_one(connection, item, made) for item in payload]
                answer = [response for response in responses if response is not None] or None
        else:
            answer = self.handle_one(connection, payload, made)
        if answer is not None:
            connection.send(_dump(answer))
        for subscription in made:
            self.registry.catch_up(subscription)

    def handle_one(
        self, connection: PubSubConnection, request: Json, made: list[Subscription]
    ) -> Json:
        """The response to one request; None for a notification (a request without an id,
        such as the clients' keep-alive `ping`), which is never answered."""
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or not valid_id(request.get("id"))
        ):
            request_id = request.get("id") if isinstance(request, dict) else None
            return error_response(
                request_id if valid_id(request_id) else None,
                RpcError(INVALID_REQUEST, "Invalid request"),
            )
        request_id = request.get("id")
        method = self.methods.get(request["method"])
        try:
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
            params = request.get("params")
            if params is None:
                params = []
            if not isinstance(params, list):
                raise invalid_params("invalid type: map, expected a sequence")
            outcome = method(connection, params)
        except RpcError as exc:
            response = error_response(request_id, exc)
        except Exception as exc:  # a bug here must look like a node error, not a dropped socket
            log.exception("pubsub_internal_error", method=request["method"])
            response = error_response(
                request_id, RpcError(INTERNAL_ERROR, f"Internal error: {exc}")
            )
        else:
            result: Json = outcome
            if isinstance(outcome, Subscription):
                result = self.registry.add(outcome)
                made.append(outcome)
            response = {"jsonrpc": "2.0", "result": result, "id": request_id}
        return None if "id" not in request else response

    # --- the methods -----------------------------------------------------------------------

    def account_subscribe(self, connection: PubSubConnection, params: list[Json]) -> Subscription:
        address = _pubkey(param(params, 0), "pubkey")
        config = config_param(params, 1)
        return AccountSubscription(
            connection,
            address=address,
            commitment=commitment_param(config),
            encoding=_account_encoding(config),
            data_slice=_data_slice(config),
        )

    def logs_subscribe(self, connection: PubSubConnection, params: list[Json]) -> Subscription:
        selector = param(params, 0)
        mentions: Pubkey | None = None
        if isinstance(selector, dict) and set(selector) == {"mentions"}:
            keys = selector["mentions"]
            if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
                raise invalid_params("invalid type: expected a sequence of addresses")
            if len(keys) != 1:
                raise RpcError(INVALID_PARAMS, "Invalid Request: Only 1 address supported")
            mentions = _pubkey(keys[0], "mentions")
        elif selector not in ("all", "allWithVotes"):  # the sandbox has no vote transactions
            raise invalid_params(
                "unknown variant, expected one of `all`, `allWithVotes`, `mentions`"
            )
        return LogsSubscription(
            connection, mentions=mentions, commitment=commitment_param(config_param(params, 1))
        )

    def signature_subscribe(self, connection: PubSubConnection, params: list[Json]) -> Subscription:
        raw = param(params, 0)
        signature: Signature | None = None
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                decoded = b58decode(raw)
                if len(decoded) == 64:
                    signature = Signature.from_bytes(decoded)
        if signature is None:
            raise RpcError(INVALID_PARAMS, "Invalid Request: Invalid signature provided")
        config = config_param(params, 1)
        received = config.get("enableReceivedNotification")
        if received is None:
            received = False
        if not isinstance(received, bool):
            raise invalid_params("invalid type: expected a boolean enableReceivedNotification")
        return SignatureSubscription(
            connection,
            signature=signature,
            commitment=commitment_param(config),
            received_notification=received,
        )

    def slot_subscribe(self, connection: PubSubConnection, params: list[Json]) -> Subscription:
        return SlotSubscription(connection)

    def root_subscribe(self, connection: PubSubConnection, params: list[Json]) -> Subscription:
        return RootSubscription(connection)

    def unsubscribe(self, connection: PubSubConnection, params: list[Json]) -> bool:
        subscription_id = param(params, 0)
        if not isinstance(subscription_id, int) or isinstance(subscription_id, bool):
            raise invalid_params("invalid type: expected u64 subscription id")
        if not self.registry.owned_by(subscription_id, connection):
            raise RpcError(INVALID_PARAMS, "Invalid subscription id.")
        return self.registry.remove(subscription_id)


def _dump(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"))


def _pubkey(value: Json, name: str) -> Pubkey:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            raw = b58decode(value)
            if len(raw) == 32:
                return Pubkey.from_bytes(raw)
    raise RpcError(INVALID_PARAMS, f"Invalid Request: Invalid {name} provided")


def _account_encoding(config: dict[str, Json]) -> AccountEncoding:
    raw = config.get("encoding") or "binary"
    try:
        return AccountEncoding(raw)
    except ValueError as exc:
        if raw == "base64+zstd":
            raise invalid_params("base64+zstd is not served by the sandbox; use base64") from exc
        raise invalid_params(f"unknown variant `{raw}`") from exc


def _data_slice(config: dict[str, Json]) -> tuple[int, int] | None:
    data_slice = config.get("dataSlice")
    if data_slice is None:
        return None
    if not isinstance(data_slice, dict):
        raise invalid_params("invalid dataSlice")
    offset, length = data_slice.get("offset"), data_slice.get("length")
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise invalid_params("invalid dataSlice")
    return offset, length
