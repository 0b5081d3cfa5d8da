"""Live payment status over Server-Sent Events: the notifier in this process on real NATS
(JetStream feed + KV), and the gateway passing its stream through to the browser."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.micro.service import Service

from axiom_gateway.status_routes import transfer_url_pays
from axiom_shared.errors import not_found
from axiom_shared.metrics import NATS_REQUESTS, SSE_STREAMS_OPEN
from axiom_shared.nats import Endpoint, serve
from axiom_shared.schemas import GetPaymentInput, GetPaymentResult, PaymentStatus, PaymentView
from axiom_shared.solana_pay import SolanaPayUrlError, parse_transfer_url
from axiom_shared.topology import PAYMENTS_GET
from tests.fixtures.infra import RunningApp, wait_for
from tests.fixtures.notifier import (
    GatewayFactory,
    NotifierFactory,
    PaymentTimeline,
    SseComment,
    SseEvent,
    SseStream,
    open_stream,
)
from tests.fixtures.services import StackFactory

pytestmark = pytest.mark.connected

PENDING, VERIFIED, PROVISIONED, FAILED = (
    PaymentStatus.PENDING,
    PaymentStatus.VERIFIED,
    PaymentStatus.PROVISIONED,
    PaymentStatus.FAILED,
)


def check_status_json(view: PaymentView) -> Any:
    """What `GET /api/pay/check-status` answers for this view."""
    return json.loads(view.model_dump_json(by_alias=True))


def assert_event(event: SseEvent | None, view: PaymentView) -> None:
    assert event is not None, "the stream ended"
    assert event.event == "status"
    assert event.id == str(view.version)
    assert event.json() == check_status_json(view)


@pytest.fixture
def timeline(nats_client: NATS) -> PaymentTimeline:
    return PaymentTimeline(nats_client)


@pytest.fixture
async def payments_answers(nats_client: NATS) -> AsyncIterator[dict[str, PaymentView]]:
    """A stand-in for the payments service's `payments.get`: knows the views put here."""
    known: dict[str, PaymentView] = {}

    async def get_payment(request: GetPaymentInput) -> GetPaymentResult:
        view = known.get(request.payment_id)
        if view is None:
            raise not_found("payment")
        return GetPaymentResult(payment=view)

    service: Service = await serve(
        nats_client,
        "payments-stub",
        "0.0.1",
        [Endpoint("get", PAYMENTS_GET, GetPaymentInput, get_payment)],
    )
    try:
        yield known
    finally:
        await service.stop()


async def streams_open() -> float:
    value: float = SSE_STREAMS_OPEN._value.get()
    return value


# --- the notifier's stream ---------------------------------------------------------------------


async def test_first_event_is_the_current_status_then_each_change_until_final(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    notifier = await notifier_factory()
    await timeline.change(PENDING)
    verified = await timeline.change(VERIFIED, tx_signature=None)
    stream = await open_stream(notifier.base_url, timeline.payment_id)
    try:
        assert stream.status == 200
        headers = stream.response.headers
        assert headers["Content-Type"].startswith("text/event-stream")
        assert headers["Cache-Control"] == "no-cache"
        assert headers["X-Accel-Buffering"] == "no"
        # A late client gets the truth first: the latest status (version 2), not the history.
        assert_event(await stream.next_event(), verified)
        provisioned = await timeline.change(PROVISIONED)
        assert_event(await stream.next_event(), provisioned)
        # Final: the stream ends by itself.
        assert await stream.rest() == []
    finally:
        await stream.close()


async def test_changes_arrive_in_order_with_increasing_ids(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    notifier = await notifier_factory()
    pending = await timeline.change(PENDING)
    stream = await open_stream(notifier.base_url, timeline.payment_id)
    try:
        assert_event(await stream.next_event(), pending)
        verified = await timeline.change(VERIFIED)
        failed = await timeline.change(FAILED, failure_reason="fulfilment refused")
        events = await stream.rest()
        assert [e.id for e in events] == ["2", "3"]
        assert_event(events[0], verified)
        assert_event(events[1], failed)
    finally:
        await stream.close()


async def test_a_payment_missing_from_the_kv_comes_from_the_payments_service(
    notifier_factory: NotifierFactory,
    timeline: PaymentTimeline,
    payments_answers: dict[str, PaymentView],
) -> None:
    notifier = await notifier_factory()
    view = timeline.view(PENDING, version=4)
    timeline.views.append(view)
    payments_answers[timeline.payment_id] = view
    stream = await open_stream(notifier.base_url, timeline.payment_id)
    try:
        assert_event(await stream.next_event(), view)
    finally:
        await stream.close()


async def test_unknown_payment_is_a_json_404_before_any_stream(
    notifier_factory: NotifierFactory, payments_answers: dict[str, PaymentView]
) -> None:
    notifier = await notifier_factory()
    for payment_id in ("pay_unknown_123", "bad%20id!"):
        stream = await open_stream(notifier.base_url, payment_id)
        try:
            assert stream.status == 404
            assert stream.response.content_type == "application/json"
            body = await stream.response.json()
            assert body["error"]["code"] == "not_found"
        finally:
            await stream.close()


async def test_resume_with_last_event_id_sends_each_version_once(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    notifier = await notifier_factory(sse_heartbeat_interval=0.2)
    pending = await timeline.change(PENDING)
    stream = await open_stream(notifier.base_url, timeline.payment_id)
    try:
        assert_event(await stream.next_event(), pending)
        verified = await timeline.change(VERIFIED)
        assert_event(await stream.next_event(), verified)
    finally:
        await stream.close()  # the client drops after `verified`

    # Back with Last-Event-ID 2 before anything new: nothing is repeated, only heartbeats...
    stream = await open_stream(notifier.base_url, timeline.payment_id, last_event_id="2")
    try:
        assert stream.status == 200
        assert isinstance(await stream.next_item(timeout=2), SseComment)
        # ...and then the next change, once, and the end.
        provisioned = await timeline.change(PROVISIONED)
        events = await stream.rest()
        assert len(events) == 1
        assert_event(events[0], provisioned)
    finally:
        await stream.close()

    # Dropped after `verified` and back after `provisioned`: exactly the missed version.
    stream = await open_stream(notifier.base_url, timeline.payment_id, last_event_id="2")
    try:
        events = await stream.rest()
        assert len(events) == 1
        assert_event(events[0], provisioned)
    finally:
        await stream.close()

    # Far behind: the current status (the truth) stands for the versions in between.
    stream = await open_stream(notifier.base_url, timeline.payment_id, last_event_id="1")
    try:
        events = await stream.rest()
        assert [e.id for e in events] == ["3"]
    finally:
        await stream.close()

    # Already has the final status: 204 tells EventSource to stop reconnecting.
    stream = await open_stream(notifier.base_url, timeline.payment_id, last_event_id="3")
    try:
        assert stream.status == 204
    finally:
        await stream.close()


async def test_heartbeat_comment_keeps_an_idle_stream_alive(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    notifier = await notifier_factory(sse_heartbeat_interval=0.2)
    pending = await timeline.change(PENDING)
    stream = await open_stream(notifier.base_url, timeline.payment_id)
    try:
        assert_event(await stream.next_event(), pending)
        started = time.monotonic()
        first = await stream.next_item(timeout=2)
        second = await stream.next_item(timeout=2)
        assert isinstance(first, SseComment)
        assert isinstance(second, SseComment)
        assert time.monotonic() - started < 1.5
    finally:
        await stream.close()


async def test_clients_that_leave_or_stop_reading_free_their_streams(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    """A client that vanishes, and one that stops reading while changes keep coming, are
    found by the shared heartbeat clock: their streams end and their slots are free again,
    while a well-behaved stream beside them keeps receiving."""
    notifier = await notifier_factory(
        sse_heartbeat_interval=0.25, sse_max_streams_per_client=3, sse_send_timeout=1.0
    )
    await timeline.change(PENDING)
    port = int(notifier.base_url.rsplit(":", 1)[1])
    path = f"/api/sse/payment-status/{timeline.payment_id}"
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    before = await streams_open()
    good = await open_stream(notifier.base_url, timeline.payment_id)
    assert await good.next_event() is not None
    vanished_reader, vanished = await asyncio.open_connection("127.0.0.1", port)
    vanished.write(request)
    assert b"200" in await vanished_reader.readline()
    stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", port)
    stalled.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.write(request)
    assert b"200" in await stalled_reader.readline()
    try:
        assert await streams_open() == before + 3
        vanished.transport.abort()  # gone without a word
        # The stalled one never reads again, while 300 changes of ~20 KB each are sent.
        for _ in range(300):
            await timeline.change(PENDING, failure_reason="x" * 20_000)
            await good.next_event()

        async def freed() -> bool:
            return await streams_open() == before + 1

        await wait_for(freed, timeout=15, interval=0.1)
        # Its slots are free: two more streams of the same client are admitted.
        more = [await open_stream(notifier.base_url, timeline.payment_id) for _ in range(2)]
        for stream in more:
            assert (await stream.next_event()) is not None
            await stream.close()
        # The well-behaved stream still gets each change.
        changed = await timeline.change(VERIFIED)
        assert_event(await good.next_event(), changed)
    finally:
        stalled.transport.abort()
        await good.close()


async def test_streams_are_limited_per_client_and_in_total(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    notifier = await notifier_factory(sse_max_streams_per_client=2, sse_max_streams=4)
    await timeline.change(PENDING)
    streams: list[SseStream] = []
    try:
        for _ in range(2):
            streams.append(await open_stream(notifier.base_url, timeline.payment_id))
            assert streams[-1].status == 200
        refused = await open_stream(notifier.base_url, timeline.payment_id)
        streams.append(refused)
        assert refused.status == 429
        assert refused.response.headers["Retry-After"] == "5"
        body = await refused.response.json()
        assert body["error"]["code"] == "too_many_streams"

        # The gateway (a trusted peer: loopback) names its clients: each has its own budget.
        for client in ("ip:203.0.113.7", "ip:203.0.113.8"):
            streams.append(
                await open_stream(
                    notifier.base_url,
                    timeline.payment_id,
                    headers={"X-Axiom-Client": client},
                )
            )
            assert streams[-1].status == 200
        # Four open: the replica's total is reached, whoever asks.
        over = await open_stream(
            notifier.base_url, timeline.payment_id, headers={"X-Axiom-Client": "ip:203.0.113.9"}
        )
        streams.append(over)
        assert over.status == 429
    finally:
        for stream in streams:
            await stream.close()


async def test_the_client_header_is_ignored_from_untrusted_peers(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    notifier = await notifier_factory(sse_max_streams_per_client=1, sse_trusted_proxies="")
    await timeline.change(PENDING)
    first = await open_stream(notifier.base_url, timeline.payment_id)
    second = await open_stream(
        notifier.base_url, timeline.payment_id, headers={"X-Axiom-Client": "ip:198.51.100.1"}
    )
    try:
        assert first.status == 200
        assert second.status == 429
    finally:
        await first.close()
        await second.close()


async def test_graceful_shutdown_ends_open_streams_cleanly(
    notifier_factory: NotifierFactory, timeline: PaymentTimeline
) -> None:
    before = await streams_open()
    notifier = await notifier_factory(shutdown_timeout=8.0)
    pending = await timeline.change(PENDING)
    streams = [await open_stream(notifier.base_url, timeline.payment_id) for _ in range(3)]
    try:
        for stream in streams:
            assert_event(await stream.next_event(), pending)
        assert await streams_open() == before + 3
        started = time.monotonic()
        closing = asyncio.create_task(notifier.server.close())
        for stream in streams:
            # A clean end of the chunked body (no error), long before the shutdown timeout.
            assert await stream.rest(timeout=3) == []
        await closing
        assert time.monotonic() - started < 3
        assert await streams_open() == before
    finally:
        for stream in streams:
            await stream.close()


# --- through the gateway -----------------------------------------------------------------------


async def notifier_and_gateway(
    notifier_factory: NotifierFactory, gateway_factory: GatewayFactory, **notifier: Any
) -> tuple[RunningApp, RunningApp]:
    running_notifier = await notifier_factory(**notifier)
    gateway = await gateway_factory(notifier_url=running_notifier.base_url)
    return running_notifier, gateway


async def test_gateway_passes_the_stream_through_without_buffering(
    notifier_factory: NotifierFactory, gateway_factory: GatewayFactory, timeline: PaymentTimeline
) -> None:
    _, gateway = await notifier_and_gateway(notifier_factory, gateway_factory)
    pending = await timeline.change(PENDING)
    stream = await open_stream(gateway.base_url, timeline.payment_id)
    try:
        assert stream.status == 200
        headers = stream.response.headers
        assert headers["Content-Type"].startswith("text/event-stream")
        assert headers["Cache-Control"] == "no-cache"
        assert headers["X-Accel-Buffering"] == "no"
        assert_event(await stream.next_event(), pending)
        # An event published after the stream opened arrives at once, not when a buffer fills.
        published = time.monotonic()
        verified = await timeline.change(VERIFIED)
        assert_event(await stream.next_event(timeout=2), verified)
        assert time.monotonic() - published < 1.0
    finally:
        await stream.close()

    # Last-Event-ID goes through: only what the client has not seen.
    provisioned = await timeline.change(PROVISIONED)
    stream = await open_stream(gateway.base_url, timeline.payment_id, last_event_id="2")
    try:
        events = await stream.rest()
        assert len(events) == 1
        assert_event(events[0], provisioned)
    finally:
        await stream.close()
    stream = await open_stream(gateway.base_url, timeline.payment_id, last_event_id="3")
    try:
        assert stream.status == 204
    finally:
        await stream.close()


async def test_gateway_passes_errors_on_and_counts_its_clients(
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
    timeline: PaymentTimeline,
    payments_answers: dict[str, PaymentView],
) -> None:
    _, gateway = await notifier_and_gateway(
        notifier_factory, gateway_factory, sse_max_streams_per_client=1
    )
    stream = await open_stream(gateway.base_url, "pay_nobody_knows")
    try:
        assert stream.status == 404
        assert (await stream.response.json())["error"]["code"] == "not_found"
    finally:
        await stream.close()

    await timeline.change(PENDING)
    first = await open_stream(gateway.base_url, timeline.payment_id)
    second = await open_stream(gateway.base_url, timeline.payment_id)
    try:
        assert first.status == 200
        assert second.status == 429
        assert second.response.headers["Retry-After"] == "5"
        assert (await second.response.json())["error"]["code"] == "too_many_streams"
    finally:
        await first.close()
        await second.close()


async def test_gateway_answers_503_json_when_the_notifier_is_down(
    gateway_factory: GatewayFactory, timeline: PaymentTimeline
) -> None:
    gateway = await gateway_factory(notifier_url="http://127.0.0.1:9")
    stream = await open_stream(gateway.base_url, timeline.payment_id)
    try:
        assert stream.status == 503
        body = await stream.response.json()
        assert body["error"]["code"] == "unavailable"
    finally:
        await stream.close()


async def test_gateway_shutdown_ends_proxied_streams(
    notifier_factory: NotifierFactory, gateway_factory: GatewayFactory, timeline: PaymentTimeline
) -> None:
    _, gateway = await notifier_and_gateway(notifier_factory, gateway_factory)
    pending = await timeline.change(PENDING)
    stream = await open_stream(gateway.base_url, timeline.payment_id)
    try:
        assert_event(await stream.next_event(), pending)
        started = time.monotonic()
        closing = asyncio.create_task(gateway.server.close())
        assert await stream.rest(timeout=3) == []
        await closing
        assert time.monotonic() - started < 3
    finally:
        await stream.close()


# --- the real payments flow, the QR code and the page -------------------------------------------


async def test_a_created_payment_streams_its_pending_status_and_has_a_qr_code(
    payments_stack_factory: StackFactory,
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
) -> None:
    await payments_stack_factory()
    _, gateway = await notifier_and_gateway(notifier_factory, gateway_factory)
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.base_url + "/api/pay/req/axiomid-pro-monthly", json={}) as r:
            assert r.status == 200
            created = await r.json()
        payment_id = created["payment_id"]
        async with http.get(f"{gateway.base_url}/api/pay/check-status/{payment_id}") as r:
            checked = await r.json()
        stream = await open_stream(gateway.base_url, payment_id)
        try:
            event = await stream.next_event()
            assert event is not None
            assert event.json() == checked
            assert event.id == str(checked["version"])
            assert checked["status"] == "pending"
        finally:
            await stream.close()

        qr = f"{gateway.base_url}/api/pay/qr/{payment_id}"
        async with http.get(qr, params={"url": created["transfer_url"]}) as r:
            assert r.status == 200
            assert r.content_type == "image/svg+xml"
            assert (await r.text()).lstrip().startswith("<svg")
        forged = created["transfer_url"].replace(
            created["recipient"], "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"
        )
        for url in (forged, "https://example.com/", "solana:x" * 400):
            async with http.get(qr, params={"url": url}) as r:
                assert r.status == 422, url
                assert (await r.json())["error"]["details"][0]["field"] == "url"


def test_transfer_url_must_pay_exactly_this_payment() -> None:
    timeline = PaymentTimeline(nc=None)  # type: ignore[arg-type]
    view = timeline.view(PENDING, amount_lamports=100_000_000)

    def pays(url: str) -> bool:
        try:
            return transfer_url_pays(parse_transfer_url(url), view)
        except SolanaPayUrlError:
            return False

    good = f"solana:{view.recipient}?amount=0.1&reference={view.reference}&label=AxiomID"
    assert pays(good)
    assert not pays(good.replace("amount=0.1", "amount=0.01"))
    assert not pays(good.replace(view.reference, view.recipient))
    assert not pays(good.replace("solana:", "solana://"))
    assert not pays(good + "&amount=1")
    for amount in (
        "nan",
        "1e999999999",
        "-0.1",
        "0.1000000001",
        "\uff11",
        " 0.1",
        "99999999999999",
    ):
        assert not pays(good.replace("amount=0.1", f"amount={amount}")), amount


async def test_checkout_page_is_served_with_a_strict_csp(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory()
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.base_url + "/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "script-src 'self'" in csp
            page = await r.text()
        assert '<script src="/static/checkout.js"' in page
        for asset in ("/static/checkout.js", "/static/checkout.css"):
            async with http.get(gateway.base_url + asset) as r:
                assert r.status == 200
        async with http.get(gateway.base_url + "/openapi.json") as r:
            spec = await r.json()
        sse = spec["paths"]["/api/sse/payment-status/{payment_id}"]["get"]
        assert "text/event-stream" in sse["responses"]["200"]["content"]


async def test_check_status_reads_no_database_and_is_never_older_than_the_stream(
    payments_stack_factory: StackFactory,
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
) -> None:
    """The real payments service changes 12 payments (pending, then expired by its scheduler).
    The moment a stream shows a change, check-status shows that version or a newer one; and
    once a payment's status is in the status bucket, polling never asks the payments service
    (no database read on the path a polling checkout page takes every second)."""
    await payments_stack_factory(payment_ttl_seconds=1, reconcile_interval_seconds=0.2)
    _, gateway = await notifier_and_gateway(notifier_factory, gateway_factory)
    status_url = gateway.base_url + "/api/pay/check-status/"

    def asked() -> float:
        value: float = NATS_REQUESTS.labels(subject=PAYMENTS_GET, outcome="ok")._value.get()
        return value

    async with aiohttp.ClientSession() as http:

        async def follow() -> list[tuple[int, int]]:
            async with http.post(
                gateway.base_url + "/api/pay/req/axiomid-pro-monthly", json={}
            ) as r:
                assert r.status == 200, await r.text()
                payment_id = (await r.json())["payment_id"]
            stream = await open_stream(gateway.base_url, payment_id)
            seen: list[tuple[int, int]] = []
            try:
                while True:
                    event = await stream.next_event(timeout=15)
                    assert event is not None
                    async with http.get(status_url + payment_id) as r:
                        assert r.status == 200
                        polled = await r.json()
                    seen.append((int(event.json()["version"]), int(polled["version"])))
                    if event.json()["status"] == "expired":
                        return seen
            finally:
                await stream.close()

        pairs = await asyncio.gather(*(follow() for _ in range(12)))
        for seen in pairs:
            assert [event for event, _ in seen] == [1, 2]
            assert all(polled >= event for event, polled in seen), seen

        # Every payment is now in the bucket: 200 polls, no request to the payments service.
        async with http.post(gateway.base_url + "/api/pay/req/axiomid-pro-monthly", json={}) as r:
            payment_id = (await r.json())["payment_id"]
        stream = await open_stream(gateway.base_url, payment_id)
        try:
            assert await stream.next_event() is not None  # the first status reached the bucket
        finally:
            await stream.close()
        before = asked()
        for _ in range(200):
            async with http.get(status_url + payment_id) as r:
                assert r.status == 200
                assert (await r.json())["payment_id"] == payment_id
        assert asked() == before
        # An unknown payment still is a 404, from the payments service.
        async with http.get(status_url + "pay_" + "A" * 24) as r:
            assert r.status == 404
