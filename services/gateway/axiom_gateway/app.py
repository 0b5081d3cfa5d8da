"""The gateway: the public HTTP API. It validates, rate-limits and routes; it owns no data."""

from __future__ import annotations

from aiohttp import web

from axiom_gateway.settings import GatewaySettings
from axiom_shared.service import create_service_app, redis_context, run_service


def create_app(settings: GatewaySettings) -> web.Application:
    app = create_service_app(settings)
    app.cleanup_ctx.append(redis_context(settings.redis_url, settings.redis_timeout))
    return app


def main() -> None:
    run_service(GatewaySettings, create_app)
