"""The gateway: the public HTTP API. It validates, rate-limits and routes; it owns no data."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from axiom_gateway.amadeus_routes import add_amadeus_routes
from axiom_gateway.features import install_feature_flags
from axiom_gateway.openapi import Operation, build_openapi
from axiom_gateway.payments_routes import add_payment_routes
from axiom_gateway.paymob_routes import add_paymob_routes
from axiom_gateway.ratelimit import install_rate_limiting
from axiom_gateway.settings import GatewaySettings
from axiom_gateway.status_routes import add_status_routes
from axiom_gateway.webhook_routes import add_webhook_routes
from axiom_shared.http import json_response
from axiom_shared.service import create_service_app, redis_context, run_service

openapi_key = web.AppKey("openapi", dict)


def create_app(settings: GatewaySettings) -> web.Application:
    app = create_service_app(settings)
    app.cleanup_ctx.append(redis_context(settings.redis_url, settings.redis_timeout))
    install_feature_flags(app, settings)
    install_rate_limiting(app, settings)
    operations: list[Operation] = []
    operations += add_payment_routes(app)
    operations += add_amadeus_routes(app)
    operations += add_webhook_routes(app)
    operations += add_paymob_routes(app)
    operations += add_status_routes(app)
    app[openapi_key] = build_openapi(operations, "AxiomID payments gateway", "1.0.0")
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_static("/static/", str(files("axiom_gateway") / "static"))
    return app


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[openapi_key])


def main() -> None:
    run_service(GatewaySettings, create_app)
