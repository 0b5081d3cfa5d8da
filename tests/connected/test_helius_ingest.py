"""Helius webhook ingestion while NATS comes and goes: a batch is answered 200 only once every
item is stored in JetStream; with NATS away the answer is a JSON 503 (so Helius retries), and
the retry stores what was missing without storing anything twice.

Real NATS (this test's own, stopped and started again on the same port and data folder),
Redis and the gateway's own factory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from solders.signature import Signature

from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.settings import GatewaySettings
from axiom_shared.nats import connect_nats
from axiom_shared.topology import ensure_topology
from sandbox.infra import NatsServer, RedisServer
from tests.fixtures.infra import start_app

pytestmark = pytest.mark.connected

SECRET = "helius-ingest-secret-71c2"


def items(count: int) -> list[dict[str, Any]]:
    return [{"signature": str(Signature.new_unique()), "type": "TRANSFER"} for _ in range(count)]


async def post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with http.post(url, json=body, headers={"Authorization": SECRET}) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def stored_signatures(nats_url: str) -> list[str]:
    nc = await connect_nats(nats_url, "test")
    try:
        js = nc.jetstream()
        info = await js.stream_info("WEBHOOKS")
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("WEBHOOKS", seq)
            found.append(str(msg.subject).rsplit(".", 1)[-1])
        return found
    finally:
        await nc.close()


async def test_a_batch_is_stored_whole_or_answered_503_and_a_retry_stores_each_item_once(
    own_nats: NatsServer, redis_server: RedisServer
) -> None:
    nc = await connect_nats(own_nats.url, "test")
    await ensure_topology(nc, nc.jetstream())
    await nc.close()
    gateway = await start_app(
        create_gateway(
            GatewaySettings.load(
                **own_nats.login("gateway"),
                redis_url=redis_server.url,
                port=0,
                request_timeout=1.0,
                helius_webhook_secret=SECRET,
            )
        )
    )
    url = gateway.base_url + "/api/webhooks/helius"
    first, second = items(20), items(20)
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await post(http, url, [*first, {"signature": "not base58!"}])
            assert status == 200, body
            assert (body["received"], body["stored"], body["duplicates"]) == (21, 20, 0)
            assert [r["index"] for r in body["rejected"]] == [20]

            own_nats.stop()
            started = time.monotonic()
            status, body = await post(http, url, [*first[:5], *second])
            assert status == 503, body
            assert body["error"]["code"] == "unavailable", body
            assert "retry" in body["error"]["message"]
            assert time.monotonic() - started < 15

            own_nats.start()
            deadline = time.monotonic() + 20
            while True:
                # Helius retries until it gets a 200.
                status, body = await post(http, url, [*first[:5], *second])
                if status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert status == 200, body
            assert body["received"] == 25
            assert body["stored"] + body["duplicates"] == 25
            assert body["duplicates"] >= 5  # the first five were stored before
    finally:
        await gateway.server.close()
    stored = await stored_signatures(own_nats.url)
    expected = sorted(item["signature"] for item in [*first, *second])
    assert sorted(stored) == expected  # every item once, none twice
