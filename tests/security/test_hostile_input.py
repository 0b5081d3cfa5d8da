"""Hostile input on every JSON route of the gateway, with the whole stack behind it.

- Every string field of every JSON body (and the path parameters) gets SQL, a script tag, a
  path traversal, NUL and control characters and a very long value: the answer is a 4xx in the
  error format or a normal answer, never a 5xx, and refused input writes no row (payments,
  entitlements, bookings).
- Bodies past the limit are a 413 (with and without Content-Length).
- A client sending its headers byte by byte, or stalling mid-body, is cut off; a body that
  arrives in several pieces is still read whole.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from axiom_shared.schemas import utcnow
from tests.fixtures.system import ORDER
from tests.security.conftest import FullStack, FullStackFactory

pytestmark = pytest.mark.e2e

PAYLOADS = {
    "sql": "' OR 1=1; DROP TABLE payments; --",
    "script": "<script>alert(1)</script>",
    "path": "../../etc/passwd",
    "nul": "abc\x00def",
    "control": "\x1b[31m\r\nX-Injected: 1\t\x7f",
    "long": "A" * 20_000,
}
DEPART = (utcnow().date() + timedelta(days=30)).isoformat()


def search_body() -> dict[str, Any]:
    return {
        "originLocationCode": "CAI",
        "destinationLocationCode": "JED",
        "departureDate": DEPART,
        "adults": 1,
        "travelClass": "ECONOMY",
        "currencyCode": "EUR",
    }


def traveler() -> dict[str, Any]:
    return {
        "id": "1",
        "dateOfBirth": "1990-04-12",
        "name": {"firstName": "AMINA", "lastName": "HASSAN"},
        "gender": "FEMALE",
        "contact": {"emailAddress": "amina@example.com"},
    }


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Where the strings are in a JSON value."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return copy


async def row_counts(stack: FullStack) -> dict[str, int]:
    return {
        "payments": await stack.rows(stack.payments_db, "payments"),
        "entitlements": await stack.rows(stack.payments_db, "entitlements"),
        # A booking Amadeus refused keeps its idempotency record (state `failed`, the answer
        # to replay): that is not a booking. Anything else is.
        "bookings": await stack.rows(
            stack.bookings_db, "agent_transactions WHERE booking_state IS NOT 'failed'"
        ),
    }


def assert_answer(status: int, headers: dict[str, str], raw: bytes, what: str) -> None:
    assert status < 500, (what, status, raw[:300])
    assert headers.get("Content-Type", "").startswith("application/json"), (what, headers)
    body = json.loads(raw)
    if status >= 400:
        assert set(body) == {"error"}, (what, body)
        assert set(body["error"]) == {"code", "message", "details"}, (what, body)
        for payload in PAYLOADS.values():
            # Errors never echo the input back (a stored-XSS / log-injection vector).
            assert payload not in raw.decode("utf-8", "replace"), (what, raw[:300])


@pytest.mark.timeout(300)
async def test_every_string_field_refuses_or_survives_hostile_values(
    full_stack_factory: FullStackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await full_stack_factory(limit=100_000, window=1)
    status, _, raw = await stack.call("POST", "/api/proxy/amadeus/search", json=search_body())
    assert status == 200, raw[:300]
    offer = json.loads(raw)["data"][0]
    created = await stack.system.create()
    routes: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (f"/api/pay/req/{ORDER}", {"account": created["reference"], "user_id": "u-1"}, {}),
        ("/api/pay/verify", {"payment_id": created["payment_id"], "signature": "1" * 64}, {}),
        ("/api/proxy/amadeus/search", search_body(), {}),
        (
            "/api/proxy/amadeus/book",
            {"flightOffers": [offer], "travelers": [traveler()]},
            {"Idempotency-Key": "fixed-key"},
        ),
        (
            "/api/webhooks/helius",
            [{"signature": "1" * 64, "type": "TRANSFER"}],  # type: ignore[list-item]
            {"Authorization": stack.helius_secret},
        ),
    ]
    outcomes: Counter[str] = Counter()
    for path, body, headers in routes:
        fields = list(string_paths(body))[:40]  # an offer has many: the first 40 are plenty
        for field in fields:
            for name, payload in PAYLOADS.items():
                before = await row_counts(stack)
                hostile = replaced(body, field, payload)
                call_headers = dict(headers)
                if "Idempotency-Key" in call_headers:
                    call_headers["Idempotency-Key"] = uuid.uuid4().hex
                status, answer_headers, raw = await stack.call(
                    "POST", path, json=hostile, headers=call_headers
                )
                what = f"POST {path} {'.'.join(map(str, field))}={name}"
                assert_answer(status, answer_headers, raw, what)
                outcomes[f"{status}"] += 1
                if status >= 400:
                    assert await row_counts(stack) == before, what
    # Path parameters: the raw payload, percent-encoded.
    for template in (
        "/api/pay/req/{}",
        "/api/pay/check-status/{}",
        "/api/sse/payment-status/{}",
        "/api/pay/qr/{}?url=solana:x",
    ):
        for name, payload in PAYLOADS.items():
            path = template.format(quote(payload, safe=""))
            before = await row_counts(stack)
            method = "POST" if template.startswith("/api/pay/req") else "GET"
            status, answer_headers, raw = await stack.call(
                method, path, json={} if method == "POST" else None
            )
            assert_answer(status, answer_headers, raw, f"{method} {template} {name}")
            assert status == 404, (template, name, status)
            assert await row_counts(stack) == before
            outcomes["path 404"] += 1
    with capsys.disabled():
        print(f"\nhostile input: {outcomes.total()} requests, statuses {dict(outcomes)}")


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        (f"/api/pay/req/{ORDER}", 64 * 1024),
        ("/api/pay/verify", 64 * 1024),
        ("/api/proxy/amadeus/search", 64 * 1024),
        ("/api/webhooks/helius", 2 * 1024 * 1024),
        ("/api/webhooks/paymob?hmac=" + "0" * 128, 64 * 1024),
    ],
)
async def test_oversized_bodies_are_413(
    full_stack_factory: FullStackFactory, path: str, limit: int
) -> None:
    stack = await full_stack_factory(limit=100_000, window=1)
    headers = {"Content-Type": "application/json", "Authorization": stack.helius_secret}
    before = await row_counts(stack)
    body = b'{"x": "' + b"A" * (limit + 10) + b'"}'

    async def chunks() -> Any:
        # No Content-Length: the limit must hold while reading a chunked body too.
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    for data in (io.BytesIO(body), chunks()):
        status, answer_headers, raw = await stack.call("POST", path, data=data, headers=headers)
        assert status == 413, (path, status, raw[:200])
        assert json.loads(raw)["error"]["code"] == "payload_too_large"
        assert answer_headers["Content-Type"].startswith("application/json")
    assert await row_counts(stack) == before


# --- slow clients ---------------------------------------------------------------------------


async def open_raw(stack: FullStack) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = stack.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_headers_sent_byte_by_byte_are_cut_off(
    full_stack_factory: FullStackFactory,
) -> None:
    stack = await full_stack_factory(http_header_timeout=1.0)
    reader, writer = await open_raw(stack)
    started = time.monotonic()
    request = b"GET /api/catalog HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
    closed_after = None
    try:
        for byte in request:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
            if reader.at_eof() or time.monotonic() - started > 6:
                break
            try:
                if await asyncio.wait_for(reader.read(1), 0.001) == b"":
                    break
            except TimeoutError:
                continue
    except (ConnectionResetError, BrokenPipeError):
        pass
    closed_after = time.monotonic() - started
    writer.close()
    assert closed_after < 3.0, f"a slowloris client kept its connection {closed_after:.1f} s"


async def test_a_body_stalled_midway_is_cut_off_with_408(
    full_stack_factory: FullStackFactory,
) -> None:
    stack = await full_stack_factory(http_body_timeout=1.0)
    before = await row_counts(stack)
    reader, writer = await open_raw(stack)
    body = json.dumps({"payment_id": "pay_" + "x" * 20}).encode()
    writer.write(
        b"POST /api/pay/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(4096), 5)
    took = time.monotonic() - started
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    assert took < 3.0
    assert await row_counts(stack) == before


async def test_a_body_in_pieces_is_read_whole(full_stack_factory: FullStackFactory) -> None:
    """A body split over TCP segments with pauses between them is one body, not the first
    piece (aiohttp's `content.read(n)` returns what has arrived so far)."""
    stack = await full_stack_factory()
    created = await stack.system.create()
    reader, writer = await open_raw(stack)
    body = json.dumps({"payment_id": created["payment_id"]}).encode()
    writer.write(
        b"POST /api/pay/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    )
    for start in range(0, len(body), 7):
        writer.write(body[start : start + 7])
        await writer.drain()
        await asyncio.sleep(0.1)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]


async def test_unusual_methods_are_refused_and_named_other_in_the_metrics(
    full_stack_factory: FullStackFactory,
) -> None:
    """The HTTP parser refuses a made-up method (400) but lets through every method it knows
    (WebDAV's and others): on a real route and on an unknown path each is refused (4xx, never
    5xx), and the request-duration metric names them all "other", not one series each."""
    stack = await full_stack_factory()
    unusual = ("PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "SEARCH", "PURGE", "REPORT", "LINK")
    statuses: Counter[int] = Counter()
    for method in (*unusual, "XMETHOD"):
        for path in ("/api/catalog", "/nowhere"):
            status, _, _ = await stack.call(method, path)
            statuses[status] += 1
    assert all(400 <= status < 500 for status in statuses), statuses
    _, _, metrics = await stack.call("GET", "/metrics")
    methods = {
        line.split('method="', 1)[1].split('"', 1)[0]
        for line in metrics.decode().splitlines()
        if line.startswith("axiom_http_request_duration_seconds_count{")
    }
    assert "other" in methods, (statuses, methods)
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
