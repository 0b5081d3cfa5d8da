"""Redis with a password, as deploy/ runs it: the gateway reads it from REDIS_PASSWORD_FILE
and is ready; without it, Redis refuses the gateway and `/readyz` says so (the password never
appears in what it answers)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.settings import GatewaySettings
from sandbox.infra import NatsServer, RedisServer
from tests.fixtures.infra import start_app

pytestmark = pytest.mark.connected


@pytest.fixture
def redis_with_password() -> Iterator[RedisServer]:
    server = RedisServer(password=secrets.token_urlsafe(24))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def readiness(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("with_password", [True, False])
async def test_the_gateway_logs_in_to_redis_with_the_password_file(
    nats_server: NatsServer,
    redis_with_password: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    with_password: bool,
) -> None:
    assert redis_with_password.password is not None
    if with_password:
        secret = tmp_path / "redis-password"
        secret.write_text(redis_with_password.password + "\n")
        monkeypatch.setenv("REDIS_PASSWORD_FILE", str(secret))
    settings = GatewaySettings.load(
        **nats_server.login("gateway"), redis_url=redis_with_password.url, port=0
    )
    gateway = await start_app(create_gateway(settings))
    try:
        status, body = await readiness(gateway.base_url)
    finally:
        await gateway.server.close()
    assert redis_with_password.password not in body
    if with_password:
        assert status == 200, body
    else:
        assert status == 503
        assert json.loads(body)["checks"]["redis"] is False
