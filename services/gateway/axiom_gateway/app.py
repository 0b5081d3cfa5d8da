"""The gateway: the public HTTP API. It validates, rate-limits and routes; it owns no data.

Every route is declared once, in the route tables of its module (`ROUTES`): the router, the
OpenAPI document, the feature gates and the rate limits all come from them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from axiom_gateway import (
    amadeus_routes,
    payments_routes,
    paymob_routes,
    refund_routes,
    status_routes,
    webhook_routes,
)
from axiom_gateway.features import install_feature_flags
from axiom_gateway.ratelimit import install_rate_limiting
from axiom_gateway.settings import GatewaySettings, settings_key
from axiom_gateway.status_routes import install_status
from axiom_shared.http import json_response
from axiom_shared.openapi import build_openapi
from axiom_shared.payments_client import install_latest_status
from axiom_shared.routes import Route, add_routes, route_table
from axiom_shared.service import create_service_app, redis_context, run_service

openapi_key = web.AppKey("openapi", dict[str, Any])


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[openapi_key])


ROUTES = (
    *payments_routes.ROUTES,
    *amadeus_routes.ROUTES,
    *webhook_routes.ROUTES,
    *paymob_routes.ROUTES,
    *status_routes.ROUTES,
    *refund_routes.ROUTES,
    Route(
        "GET",
        "/openapi.json",
        _openapi,
        "This document: the gateway's API, generated from its route table",
        responses={200: None},
        response_docs={
            200: {
                "description": "the OpenAPI 3.1 document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        tags=("meta",),
    ),
)


def create_app(settings: GatewaySettings) -> web.Application:
    app = create_service_app(settings, settings_key)
    app.cleanup_ctx.append(redis_context(settings))
    install_latest_status(app, follow=True)
    install_status(app, settings)
    add_routes(app, ROUTES)
    install_feature_flags(app, settings)
    install_rate_limiting(app, settings)
    app[openapi_key] = build_openapi(route_table(app), "AxiomID payments gateway", "1.0.0")
    return app


def main() -> None:
    run_service(GatewaySettings, create_app)
