"""The whole stack for the security and fuzz tests: payments, verifier, notifier,
amadeus-proxy (in front of the Amadeus double) and a gateway under test with known secrets.

Every service is built by its own factory in this process, on the real NATS, Redis, libSQL
files and Solana sandbox of the shared fixtures. The gateway under test has its own Helius and
Paymob secrets, an admin token and a rate limit that its caller chooses (the fuzz run raises it
so that the limiter does not answer most requests).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from axiom_amadeus_proxy.app import bookings_db_key
from axiom_amadeus_proxy.app import create_app as create_proxy
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_gateway.ratelimit_settings import RateLimitRule
from axiom_shared.db import Database
from sandbox.infra import NatsServer, RedisServer
from tests.fixtures.amadeus import AmadeusSandbox
from tests.fixtures.infra import RunningApp, start_app
from tests.fixtures.notifier import GatewayFactory, NotifierFactory
from tests.fixtures.system import PaymentSystem, SystemFactory

PROXY_PREFIX = "/api/proxy/"


@dataclass
class FullStack:
    system: PaymentSystem
    gateway: RunningApp
    notifier: RunningApp
    proxy: RunningApp
    amadeus: AmadeusSandbox
    helius_secret: str
    paymob_secret: str
    admin_token: str

    @property
    def url(self) -> str:
        return self.gateway.base_url

    @property
    def payments_db(self) -> Database:
        return self.system.db

    @property
    def bookings_db(self) -> Database:
        db: Database = self.proxy[bookings_db_key]
        return db

    async def rows(self, db: Database, table: str) -> int:
        row = await db.fetch_one(f"SELECT count(*) AS n FROM {table}")  # noqa: S608
        assert row is not None
        return int(row["n"])

    async def call(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, self.url + path, **kwargs) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.read()


FullStackFactory = Callable[..., Awaitable[FullStack]]


@pytest.fixture
async def proxy_factory(
    nats_server: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[RunningApp]]]:
    started: list[RunningApp] = []

    async def start(amadeus: AmadeusSandbox, **overrides: Any) -> RunningApp:
        values: dict[str, Any] = {
            **nats_server.login("amadeus-proxy"),
            "redis_url": redis_server.url,
            "bookings_db_url": f"file:{tmp_path / 'bookings.db'}",
            "port": 0,
            "amadeus_base_url": amadeus.base_url,
            "amadeus_client_id": amadeus.client_id,
            "amadeus_client_secret": amadeus.client_secret,
            "amadeus_redis_prefix": f"sec:{uuid.uuid4().hex}",
            "amadeus_rate_per_second": 0,
            "amadeus_min_interval": 0.0,
            "amadeus_timeout": 3.0,
            "amadeus_token_wait": 3.0,
            "amadeus_retry_base_delay": 0.01,
            "amadeus_booking_stale_after": 30.0,
        }
        values.update(overrides)
        running = await start_app(create_proxy(AmadeusProxySettings.load(**values)))
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.server.close()


@pytest.fixture
async def full_stack_factory(
    payment_system_factory: SystemFactory,
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
    proxy_factory: Callable[..., Awaitable[RunningApp]],
    amadeus_sandbox: AmadeusSandbox,
) -> FullStackFactory:
    """`await factory(limit=.., window=.., payments={...}, proxy={...}, **gateway_settings)`."""

    async def start(
        *,
        limit: int = 10,
        window: float = 10,
        payments: dict[str, Any] | None = None,
        proxy: dict[str, Any] | None = None,
        **gateway_overrides: Any,
    ) -> FullStack:
        system = await payment_system_factory(webhooks=False, payments=payments)
        notifier = await notifier_factory()
        proxy_app = await proxy_factory(amadeus_sandbox, **(proxy or {}))
        helius_secret = f"helius-{secrets.token_hex(16)}"
        paymob_secret = f"paymob-{secrets.token_hex(16)}"
        admin_token = f"admin-{secrets.token_hex(16)}"
        values: dict[str, Any] = {
            "notifier_url": notifier.base_url,
            "helius_webhook_secret": helius_secret,
            "paymob_hmac_secret": paymob_secret,
            "admin_token": admin_token,
            "rate_limits": [RateLimitRule(prefix=PROXY_PREFIX, limit=limit, window=window)],
            "rate_limit_redis_prefix": f"sec:ratelimit:{uuid.uuid4().hex}",
            "amadeus_request_timeout": 10.0,
        }
        values.update(gateway_overrides)
        gateway = await gateway_factory(**values)
        return FullStack(
            system=system,
            gateway=gateway,
            notifier=notifier,
            proxy=proxy_app,
            amadeus=amadeus_sandbox,
            helius_secret=str(values["helius_webhook_secret"]),
            paymob_secret=str(values["paymob_hmac_secret"]),
            admin_token=str(values["admin_token"]),
        )

    return start
