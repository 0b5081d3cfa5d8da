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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from axiom_notifier.hub import StatusHub
from axiom_notifier.settings import NotifierSettings, settings_key
from axiom_shared.errors import ApiError, not_found, unavailable
from axiom_shared.http import peer_address
from axiom_shared.logging import get_logger
from axiom_shared.metrics import SSE_STREAMS_OPEN
from axiom_shared.payments_client import latest_status_key
from axiom_shared.routes import Route
from axiom_shared.schemas import FINAL_STATUSES, PaymentStatusChanged, PaymentView
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
        # Watch first, then read: a change landing in between is in the queue.
        queue = hub.watch(payment_id)
        try:
            current = await app[latest_status_key].view(payment_id)
            if app[stopping_key].is_set():
                raise unavailable("this replica is shutting down, reconnect")
            had = parse_last_event_id(req.headers.get(LAST_EVENT_ID_HEADER))
            if had is not None and had >= current.version and current.status in FINAL_STATUSES:
                # Nothing will ever follow: 204 tells EventSource not to reconnect.
                return web.Response(status=204, headers={"Cache-Control": "no-cache"})
            return await _stream(req, settings, queue, current, had or 0)
        finally:
            hub.unwatch(payment_id, queue)
    finally:
        limits.release(client)


async def _stream(
    req: web.Request,
    settings: NotifierSettings,
    queue: asyncio.Queue[PaymentStatusChanged | None],
    current: PaymentView,
    sent: int,
) -> web.StreamResponse:
    sse = EventSourceResponse(
        ping_interval=settings.sse_heartbeat_interval, send_timeout=settings.sse_send_timeout
    )
    await sse.prepare(req)
    SSE_STREAMS_OPEN.inc()
    # Done when the client is gone (a heartbeat write failed) or streaming was stopped.
    gone = asyncio.create_task(sse.wait())
    try:
        latest = current
        while True:
            if latest.version > sent:
                await sse.send(
                    latest.model_dump_json(by_alias=True),
                    id=str(latest.version),
                    event=STATUS_EVENT,
                )
                sent = latest.version
            if latest.status in FINAL_STATUSES and latest.version <= sent:
                break
            change = await _next_change(queue, gone)
            if change is None:
                # Shutting down, cut off as too slow, or the client left: the client
                # reconnects (elsewhere) with Last-Event-ID and resumes.
                break
            if change.payment.version > latest.version:
                latest = change.payment
    except (ConnectionResetError, TimeoutError):
        pass  # the client went away or stalled: nothing to tell it
    finally:
        SSE_STREAMS_OPEN.dec()
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await sse.write_eof()
    return sse


async def _next_change(
    queue: asyncio.Queue[PaymentStatusChanged | None], gone: asyncio.Task[None]
) -> PaymentStatusChanged | None:
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await getter
    return None


def install_streams(app: web.Application, settings: NotifierSettings) -> None:
    app[limits_key] = StreamLimits(settings.sse_max_streams, settings.sse_max_streams_per_client)

    async def end_streams(app: web.Application) -> None:
        # Before aiohttp waits for handlers to finish: every open stream ends cleanly now, so
        # browsers reconnect to another replica instead of waiting for the shutdown timeout.
        app[hub_key].close_all()

    app.on_shutdown.append(end_streams)


#: Behind the gateway, which documents the same path (`axiom_gateway.status_routes`).
ROUTES = (Route("GET", STATUS_STREAM_PATH, payment_status_stream, internal=True),)
