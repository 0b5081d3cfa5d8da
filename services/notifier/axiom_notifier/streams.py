"""`GET /api/sse/payment-status/{payment_id}`: a payment's status as Server-Sent Events.

The first event is the payment's current status (from the `payment_status` KV, else from the
payments service), then one event per change, as the status feed hands them to the hub. Each
event is `event: status`, `id: <version>`, `data: <the check-status JSON>`; the stream ends
after a final status. A client reconnecting with `Last-Event-ID` gets only newer versions: the
current one when it is newer (intermediate versions may be collapsed into it: the latest status
is the truth), nothing twice. One who already has the final status gets 204, which tells
`EventSource` to stop reconnecting.

Race-free start: the stream watches the hub *before* it reads the current status, and every
event is sent only when its version is greater than the last one sent, so a change that lands
in between is neither lost nor repeated.

An open stream is one waiting handler and one slot on the shared heartbeat clock (`Heartbeats`):
no ping task or watcher task per stream, so 20,000 streams cost memory, not wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import defaultdict
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from axiom_notifier.hub import Heartbeats, StatusHub, Watcher
from axiom_notifier.settings import NotifierSettings, settings_key
from axiom_shared.errors import ApiError, not_found, unavailable
from axiom_shared.http import peer_address
from axiom_shared.logging import get_logger
from axiom_shared.metrics import SSE_STREAMS_OPEN
from axiom_shared.payments_client import latest_status_key
from axiom_shared.routes import Route
from axiom_shared.schemas import FINAL_STATUSES, PaymentView
from axiom_shared.service import stopping_key
from axiom_shared.wire import (
    LAST_EVENT_ID_HEADER,
    STATUS_EVENT,
    STATUS_STREAM_PATH,
    STREAM_CLIENT_HEADER,
    is_payment_id,
    parse_last_event_id,
)

log = get_logger(__name__)

_MAX_CLIENT = 256

Network = IPv4Network | IPv6Network


class StreamLimits:
    """Open streams per client and in total on this replica (admission is synchronous, so
    two requests can never both take the last slot)."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self._per_client: dict[str, int] = defaultdict(int)

    def admit(self, client: str) -> bool:
        if self.total >= self.max_total or self._per_client[client] >= self.max_per_client:
            if not self._per_client[client]:
                del self._per_client[client]
            return False
        self.total += 1
        self._per_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def open_for(self, client: str) -> int:
        return self._per_client.get(client, 0)


hub_key = web.AppKey("hub", StatusHub)
limits_key = web.AppKey("stream_limits", StreamLimits)
heartbeats_key = web.AppKey("heartbeats", Heartbeats)

#: A stream whose client has left this much unread is stalled: it is cut off at its next beat.
STALLED_BYTES = 64 * 1024


class EventStream(web.StreamResponse):
    """A `text/event-stream` answer. Events are written with a send timeout (a client that
    does not take them is cut off); heartbeats never wait (see `heartbeat`). On Linux the
    kernel aborts the connection when written data stays unacknowledged for the send
    timeout (`TCP_USER_TIMEOUT`), so a vanished peer is found by the next beat."""

    def __init__(self, send_timeout: float) -> None:
        super().__init__(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "X-Accel-Buffering": "no",
            },
        )
        self._send_timeout = send_timeout
        self._transport: asyncio.Transport | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if sock is not None and user_timeout is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, int(self._send_timeout * 1000))
        self._transport = transport
        self.enable_chunked_encoding()
        return await super().prepare(request)

    async def send_event(self, data: str, *, event_id: str, event: str) -> None:
        lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
        payload = f"id: {event_id}\nevent: {event}\n{lines}\n".encode()
        try:
            async with asyncio.timeout(self._send_timeout):
                await self.write(payload)
        except TimeoutError:
            self._abort()
            raise

    async def heartbeat(self) -> bool:
        """Write a comment line without waiting; False when the client is gone or stalled."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > STALLED_BYTES:
            self._abort()
            return False
        try:
            await self.write(b": ping\n\n")
        except (ConnectionResetError, RuntimeError):
            return False
        return True

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def client_of(request_: web.Request, trusted: Sequence[Network]) -> str:
    """Who a stream counts against: the gateway names the client in `X-Axiom-Client`; the
    header is believed from trusted peers only, anyone else is counted by its address."""
    peer_text, peer = peer_address(request_)
    if peer is None:
        return f"peer:{(peer_text or 'unknown')[:_MAX_CLIENT]}"
    if any(peer in network for network in trusted):
        named = request_.headers.get(STREAM_CLIENT_HEADER, "").strip()
        if named:
            return named[:_MAX_CLIENT]
    return f"ip:{peer}"


async def payment_status_stream(req: web.Request) -> web.StreamResponse:
    app = req.app
    settings = app[settings_key]
    payment_id = req.match_info["payment_id"]
    if not is_payment_id(payment_id):
        raise not_found("payment")
    if app[stopping_key].is_set():
        raise unavailable("this replica is shutting down, reconnect")
    client = client_of(req, settings.sse_trusted_proxies)
    limits = app[limits_key]
    if not limits.admit(client):
        raise ApiError(
            429,
            "too_many_streams",
            "too many open status streams; close one or poll check-status",
            headers={"Retry-After": "5"},
        )
    hub = app[hub_key]
    try:
        # Watch first, then read: a change landing in between is in the watcher.
        watcher = hub.watch(payment_id)
        try:
            current = await app[latest_status_key].view(payment_id)
            if app[stopping_key].is_set():
                raise unavailable("this replica is shutting down, reconnect")
            had = parse_last_event_id(req.headers.get(LAST_EVENT_ID_HEADER))
            if had is not None and had >= current.version and current.status in FINAL_STATUSES:
                # Nothing will ever follow: 204 tells EventSource not to reconnect.
                return web.Response(status=204, headers={"Cache-Control": "no-cache"})
            return await _stream(req, settings, watcher, current, had or 0)
        finally:
            hub.unwatch(watcher)
    finally:
        limits.release(client)


async def _stream(
    req: web.Request,
    settings: NotifierSettings,
    watcher: Watcher,
    current: PaymentView,
    sent: int,
) -> web.StreamResponse:
    sse = EventStream(settings.sse_send_timeout)
    await sse.prepare(req)
    SSE_STREAMS_OPEN.inc()
    beats = req.app[heartbeats_key]
    # A failed beat (the client left or stalled) closes the watcher, which ends the stream.
    beats.add(watcher, sse.heartbeat, watcher.close)
    try:
        latest = current
        while True:
            if latest.version > sent:
                await sse.send_event(
                    latest.model_dump_json(by_alias=True),
                    event_id=str(latest.version),
                    event=STATUS_EVENT,
                )
                sent = latest.version
            if latest.status in FINAL_STATUSES and latest.version <= sent:
                break
            change = await watcher.next()
            if change is None:
                # Shutting down, cut off as too slow, or the client left: the client
                # reconnects (elsewhere) with Last-Event-ID and resumes.
                break
            if change.payment.version > latest.version:
                latest = change.payment
    except (ConnectionResetError, TimeoutError):
        pass  # the client went away or stalled: nothing to tell it
    finally:
        beats.remove(watcher)
        SSE_STREAMS_OPEN.dec()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await sse.write_eof()
    return sse


def install_streams(app: web.Application, settings: NotifierSettings) -> None:
    app[limits_key] = StreamLimits(settings.sse_max_streams, settings.sse_max_streams_per_client)
    beats = app[heartbeats_key] = Heartbeats(settings.sse_heartbeat_interval)

    async def start_beats(_app: web.Application) -> None:
        beats.start()

    async def stop_beats(_app: web.Application) -> None:
        await beats.stop()

    app.on_startup.append(start_beats)
    app.on_cleanup.append(stop_beats)

    async def end_streams(app: web.Application) -> None:
        # Before aiohttp waits for handlers to finish: every open stream ends cleanly now, so
        # browsers reconnect to another replica instead of waiting for the shutdown timeout.
        app[hub_key].close_all()

    app.on_shutdown.append(end_streams)


#: Behind the gateway, which documents the same path (`axiom_gateway.status_routes`).
ROUTES = (Route("GET", STATUS_STREAM_PATH, payment_status_stream, internal=True),)
