"""A start-up that fails half way leaves nothing running: every service, with its consumers,
NATS endpoints and clients already started, is made to fail at the next step of its start-up,
as `run_service` would meet it; afterwards no task of it is left and it holds no NATS or Redis
connection. The payments service is also made to fail inside its own start-up (its NATS
endpoints refused after its relay, consumer and scheduler started)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from axiom_amadeus_proxy.app import create_app as create_amadeus_proxy
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.settings import GatewaySettings
from axiom_notifier.app import create_app as create_notifier
from axiom_notifier.settings import NotifierSettings
from axiom_payments import app as payments_app
from axiom_payments.settings import PaymentsSettings
from axiom_shared.service import settings_key
from axiom_verifier.app import create_app as create_verifier
from axiom_verifier.settings import VerifierSettings
from sandbox.infra import NatsServer, RedisServer
from tests.fixtures.infra import wait_for
from tests.fixtures.solana import SolanaSandbox

pytestmark = pytest.mark.connected

AppFactory = Callable[[], web.Application]


class StartUpFailed(RuntimeError):
    pass


@pytest.fixture
def factories(
    nats_server: NatsServer,
    redis_server: RedisServer,
    solana_sandbox: SolanaSandbox,
    tmp_path: Path,
) -> dict[str, AppFactory]:
    common: dict[str, Any] = {"redis_url": redis_server.url, "port": 0}
    login = nats_server.login
    return {
        "gateway": lambda: create_gateway(GatewaySettings.load(**common, **login("gateway"))),
        "payments": lambda: payments_app.create_app(
            PaymentsSettings.load(
                **common,
                **login("payments"),
                turso_db_url=f"file:{tmp_path / 'payments.db'}",
                solana_rpc_url=solana_sandbox.rpc_url,
            )
        ),
        "verifier": lambda: create_verifier(
            VerifierSettings.load(
                **common, **login("verifier"), solana_rpc_url=solana_sandbox.rpc_url
            )
        ),
        "notifier": lambda: create_notifier(NotifierSettings.load(**common, **login("notifier"))),
        "amadeus-proxy": lambda: create_amadeus_proxy(
            AmadeusProxySettings.load(
                **common,
                **login("amadeus-proxy"),
                bookings_db_url=f"file:{tmp_path / 'bookings.db'}",
                amadeus_base_url="http://127.0.0.1:9",
                amadeus_client_id="id",
                amadeus_client_secret="secret",
            )
        ),
    }


async def nats_clients(server: NatsServer) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.monitor_url}/connz") as resp,
    ):
        body: dict[str, Any] = await resp.json()
    return [str(conn.get("name", "")) for conn in body.get("connections") or []]


async def redis_clients(redis: Redis) -> int:
    return len(await redis.client_list())


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def others(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t not in before and not t.done()}


async def assert_nothing_left(
    before: set[asyncio.Task[Any]],
    nats_server: NatsServer,
    redis: Redis,
    redis_before: int,
    service: str,
) -> None:
    # Closing is immediate; a cancelled task may need one turn of the loop to finish.
    await wait_for(lambda: not others(before), timeout=5.0)

    async def no_nats_connection() -> bool:
        # The server drops a closed connection from its list on its next read.
        return service not in await nats_clients(nats_server)

    await wait_for(no_nats_connection, timeout=5.0)
    assert await redis_clients(redis) == redis_before


async def fail_start_up(app: web.Application) -> None:
    """Start `app` as `run_service` does; its start-up raises; clean up as run_app does."""
    runner = web.AppRunner(app, handle_signals=False)
    with pytest.raises(StartUpFailed):
        await runner.setup()
    await runner.cleanup()


@pytest.mark.parametrize("name", ["gateway", "payments", "verifier", "notifier", "amadeus-proxy"])
async def test_start_up_failing_after_everything_started_leaves_nothing_running(
    name: str, factories: dict[str, AppFactory], nats_server: NatsServer, redis: Redis
) -> None:
    app = factories[name]()
    started: list[bool] = []

    async def next_step(app: web.Application) -> AsyncIterator[None]:
        # By now every earlier start-up step ran: consumers fetch, endpoints answer.
        started.append(True)
        raise StartUpFailed("the next start-up step failed")
        yield  # pragma: no cover - a cleanup context is a generator

    app.cleanup_ctx.append(next_step)
    service = app[settings_key].service_name
    redis_before = await redis_clients(redis)
    before = set(asyncio.all_tasks())
    await fail_start_up(app)
    assert started == [True]
    await assert_nothing_left(before, nats_server, redis, redis_before, service)


async def test_payments_failing_inside_its_start_up_stops_what_it_started(
    factories: dict[str, AppFactory],
    nats_server: NatsServer,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its relay, findings consumer and scheduler are running when serving its NATS
    endpoints fails: all three are stopped, the RPC client closed, NATS drained."""
    reached: list[str] = []

    async def serve_fails(*_args: Any, **_kwargs: Any) -> Any:
        reached.append("serve")
        raise StartUpFailed("could not serve the NATS endpoints")

    monkeypatch.setattr(payments_app, "serve", serve_fails)
    app = factories["payments"]()
    redis_before = await redis_clients(redis)
    before = set(asyncio.all_tasks())
    await fail_start_up(app)
    assert reached == ["serve"]
    await assert_nothing_left(before, nats_server, redis, redis_before, "payments")
