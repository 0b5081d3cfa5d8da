"""Feature flags (`FEATURE_*`): a feature turned off answers 503 `feature_disabled` in the one
error format, with Retry-After, and sends nothing anywhere; every other route is unaffected.

Gateways are built by their own factory on the fixtures' NATS and Redis. What a gateway sends
is watched on the bus itself (the gateway owns no data: anything it would write goes over NATS),
and for payments in the payments DB as well.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from solders.keypair import Keypair

from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.features import disabled_features
from axiom_gateway.settings import GatewaySettings
from axiom_shared.routes import route_table
from sandbox.infra import NatsServer, RedisServer
from tests.connected.test_paymob import SECRET as PAYMOB_SECRET
from tests.connected.test_paymob import new_obj, redirect_query, sign
from tests.fixtures.infra import RunningApp, start_app, wait_for
from tests.fixtures.services import StackFactory

pytestmark = pytest.mark.connected

ORDER = "axiomid-pro-monthly"
HELIUS_SECRET = "helius-test-secret-3b9f"
FLAGS = ("solana_payments", "helius_ingest", "paymob_ingest", "amadeus")

Answer = tuple[int, dict[str, str], Any]
GatewayFactory = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def gateway_factory(
    nats_server: NatsServer, redis_server: RedisServer
) -> AsyncIterator[GatewayFactory]:
    """`await gateway_factory(feature_amadeus=False, ...)`: a gateway with those settings."""
    started: list[RunningApp] = []

    async def start(**overrides: Any) -> RunningApp:
        settings = GatewaySettings.load(
            **nats_server.login("gateway"),
            redis_url=redis_server.url,
            port=0,
            request_timeout=1.0,
            amadeus_request_timeout=1.0,
            helius_webhook_secret=HELIUS_SECRET,
            paymob_hmac_secret=PAYMOB_SECRET,
            **overrides,
        )
        gateway = await start_app(create_gateway(settings))
        started.append(gateway)
        return gateway

    yield start
    for gateway in reversed(started):
        await gateway.server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class BusWatch:
    """Every message published on `subjects` (core NATS sees JetStream publishes too)."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def record(self, msg: Msg) -> None:
        self.subjects.append(msg.subject)


async def watch(nc: NATS, *subjects: str) -> BusWatch:
    seen = BusWatch()
    for subject in subjects:
        await nc.subscribe(subject, cb=seen.record)
    await nc.flush()
    return seen


async def call(
    http: aiohttp.ClientSession, app: RunningApp, method: str, path: str, **kwargs: Any
) -> Answer:
    async with http.request(method, app.base_url + path, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, dict(response.headers), body


def assert_feature_disabled(answer: Answer, feature: str) -> None:
    status, headers, body = answer
    assert status == 503
    assert headers["Retry-After"] == "60"
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "feature_disabled"
    assert body["error"]["details"] == [
        {"field": None, "problem": f"feature {feature} is turned off"}
    ]
    # Refused before the rate limiter: no one's budget was spent on it.
    assert "RateLimit-Remaining" not in headers


def refused(feature: str) -> float:
    value = REGISTRY.get_sample_value("axiom_feature_disabled_requests_total", {"feature": feature})
    return value or 0.0


async def settle() -> None:
    """Long enough for a message the gateway had sent to reach our subscription."""
    await asyncio.sleep(0.3)


# --- Solana payments --------------------------------------------------------------------------


async def test_solana_payments_off_refuses_creation_and_verify_status_still_answers(
    payments_stack_factory: StackFactory,
    gateway_factory: GatewayFactory,
    nats_client: NATS,
    http: aiohttp.ClientSession,
) -> None:
    stack = await payments_stack_factory()
    creations = await watch(nats_client, "payments.create")
    # Flag on (the default): a payment is created as usual.
    on = stack.gateway
    status, _, created = await call(http, on, "POST", f"/api/pay/req/{ORDER}", json={})
    assert status == 200, created
    payment_id = created["payment_id"]
    await wait_for(lambda: len(creations.subjects) == 1)

    off = await gateway_factory(feature_solana_payments=False)
    before = refused("solana_payments")
    payer = str(Keypair().pubkey())
    for body in ({}, {"account": payer}, {"user_id": "u-1", "bogus": True}):
        answer = await call(http, off, "POST", f"/api/pay/req/{ORDER}", json=body)
        assert_feature_disabled(answer, "solana_payments")
    answer = await call(
        http, off, "POST", f"/api/pay/req/{ORDER}", json={}, headers={"Idempotency-Key": "k-1"}
    )
    assert_feature_disabled(answer, "solana_payments")
    answer = await call(http, off, "POST", "/api/pay/verify", json={"payment_id": payment_id})
    assert_feature_disabled(answer, "solana_payments")
    assert refused("solana_payments") - before == 5

    # Nothing was asked of the payments service, nothing was written.
    await settle()
    assert creations.subjects == ["payments.create"]
    assert await stack.count("payments") == 1
    assert await stack.count("idempotency_keys") == 0

    # What serves payments already made keeps answering, as do the read-only routes.
    status, _, view = await call(http, off, "GET", f"/api/pay/check-status/{payment_id}")
    assert (status, view["status"]) == (200, "pending")
    status, _, info = await call(http, off, "GET", f"/api/pay/req/{ORDER}")
    assert status == 200
    assert set(info) == {"label", "icon"}
    status, _, items = await call(http, off, "GET", "/api/catalog")
    assert status == 200
    assert ORDER in {item["order_id"] for item in items}
    # Routes that do not exist keep their own answers.
    assert (await call(http, off, "GET", "/api/pay/verify"))[0] == 405
    assert (await call(http, off, "POST", "/api/pay/verify/x", json={}))[0] == 404


# --- webhooks ---------------------------------------------------------------------------------


def helius_batch() -> list[dict[str, Any]]:
    signature = str(Keypair().sign_message(uuid.uuid4().bytes))
    return [{"signature": signature, "type": "TRANSFER", "accountData": []}]


async def test_helius_ingest_off_refuses_webhooks_and_stores_nothing(
    gateway_factory: GatewayFactory, nats_client: NATS, http: aiohttp.ClientSession
) -> None:
    stored = await watch(nats_client, "webhooks.helius.>")
    off = await gateway_factory(feature_helius_ingest=False)
    auth = {"Authorization": HELIUS_SECRET}
    answer = await call(
        http, off, "POST", "/api/webhooks/helius", json=helius_batch(), headers=auth
    )
    assert_feature_disabled(answer, "helius_ingest")
    # Refused before authentication is even looked at: nothing about the secret is revealed.
    answer = await call(http, off, "POST", "/api/webhooks/helius", json=[])
    assert_feature_disabled(answer, "helius_ingest")
    await settle()
    assert stored.subjects == []

    on = await gateway_factory()
    status, _, receipt = await call(
        http, on, "POST", "/api/webhooks/helius", json=helius_batch(), headers=auth
    )
    assert (status, receipt["stored"]) == (200, 1)
    await wait_for(lambda: len(stored.subjects) == 1)


async def test_paymob_ingest_off_refuses_callbacks_and_redirects_and_stores_nothing(
    gateway_factory: GatewayFactory, nats_client: NATS, http: aiohttp.ClientSession
) -> None:
    stored = await watch(nats_client, "webhooks.paymob.>")
    off = await gateway_factory(feature_paymob_ingest=False)
    obj = new_obj()
    callback = {"type": "TRANSACTION", "obj": obj}
    path = "/api/webhooks/paymob"
    answer = await call(http, off, "POST", path, params={"hmac": sign(obj)}, json=callback)
    assert_feature_disabled(answer, "paymob_ingest")
    query = {**redirect_query(obj), "hmac": sign(obj)}
    assert_feature_disabled(await call(http, off, "GET", path, params=query), "paymob_ingest")
    await settle()
    assert stored.subjects == []

    on = await gateway_factory()
    status, _, receipt = await call(
        http, on, "POST", path, params={"hmac": sign(obj)}, json=callback
    )
    assert status == 200, receipt
    assert receipt["duplicate"] is False
    await wait_for(lambda: len(stored.subjects) == 1)


# --- Amadeus ----------------------------------------------------------------------------------


def search_body() -> dict[str, Any]:
    depart = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    return {
        "originLocationCode": "CAI",
        "destinationLocationCode": "JED",
        "departureDate": depart,
        "adults": 1,
    }


async def test_amadeus_off_refuses_search_and_booking_before_anything_is_sent(
    gateway_factory: GatewayFactory, nats_client: NATS, http: aiohttp.ClientSession
) -> None:
    sent = await watch(nats_client, "amadeus.>")
    off = await gateway_factory(feature_amadeus=False)
    answer = await call(http, off, "POST", "/api/proxy/amadeus/search", json=search_body())
    assert_feature_disabled(answer, "amadeus")
    answer = await call(
        http,
        off,
        "POST",
        "/api/proxy/amadeus/book",
        json={"flightOffers": [], "travelers": []},
        headers={"Idempotency-Key": "k-1"},
    )
    assert_feature_disabled(answer, "amadeus")
    await settle()
    assert sent.subjects == []

    # On: the search goes to the amadeus-proxy (none runs here, so the answer is the usual
    # "unavailable", rate limited as ever).
    on = await gateway_factory()
    status, headers, body = await call(
        http, on, "POST", "/api/proxy/amadeus/search", json=search_body()
    )
    assert status == 503
    assert body["error"]["code"] == "unavailable"
    assert "RateLimit-Remaining" in headers
    await wait_for(lambda: sent.subjects == ["amadeus.search"])


# --- everything else --------------------------------------------------------------------------


async def test_every_flag_off_leaves_every_other_route_alone(
    gateway_factory: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    off = await gateway_factory(**{f"feature_{name}": False for name in FLAGS})
    assert (await call(http, off, "GET", "/healthz"))[0] == 200
    status, _, spec = await call(http, off, "GET", "/openapi.json")
    assert status == 200
    assert "/api/pay/verify" in spec["paths"]
    # No payments service runs here: these are the usual answers, not feature_disabled.
    for path in (f"/api/pay/check-status/{uuid.uuid4().hex}", f"/api/pay/req/{ORDER}"):
        status, _, body = await call(http, off, "GET", path)
        assert body["error"]["code"] != "feature_disabled", path
    assert (await call(http, off, "GET", "/api/webhooks/helius"))[0] == 405
    assert (await call(http, off, "POST", "/api/webhooks/helius/more", json=[]))[0] == 404
    # The SSE stream and the QR code are never behind a flag.
    table = {route.path: route for route in route_table(off.app) if route.method == "GET"}
    sse = [path for path in table if path.startswith("/api/sse/")]
    assert sse
    for path in sse + [p for p in table if "qr" in p]:
        assert table[path].feature is None, path


def test_flags_come_from_the_environment_and_default_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FLAGS:
        monkeypatch.delenv(f"FEATURE_{name.upper()}", raising=False)
    assert disabled_features(GatewaySettings.load()) == []
    monkeypatch.setenv("FEATURE_SOLANA_PAYMENTS", "false")
    monkeypatch.setenv("FEATURE_AMADEUS", "0")
    monkeypatch.setenv("FEATURE_HELIUS_INGEST", "true")
    monkeypatch.setenv("FEATURE_RETRY_AFTER_SECONDS", "30")
    settings = GatewaySettings.load()
    assert disabled_features(settings) == ["solana_payments", "amadeus"]
    assert settings.feature_retry_after_seconds == 30
    # All on: not even a middleware is added.
    monkeypatch.delenv("FEATURE_SOLANA_PAYMENTS")
    monkeypatch.delenv("FEATURE_AMADEUS")
    plain = create_gateway(GatewaySettings.load())
    guarded = create_gateway(GatewaySettings.load(feature_amadeus=False))
    assert len(guarded.middlewares) == len(plain.middlewares) + 1
