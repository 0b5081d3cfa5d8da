"""Each HTTP app declares its routes once (`axiom_shared.routes`): whatever its router serves is
in its table, and whatever the gateway's table holds is in its OpenAPI document unless it is
marked internal. Adding a route without documenting it fails here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.web_urldispatcher import StaticResource

from axiom_amadeus_proxy.app import create_app as create_amadeus_proxy
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.app import openapi_key
from axiom_gateway.settings import GatewaySettings
from axiom_notifier.app import create_app as create_notifier
from axiom_notifier.settings import NotifierSettings
from axiom_payments.app import create_app as create_payments
from axiom_payments.settings import PaymentsSettings
from axiom_shared.routes import RateLimitClass, route_table
from axiom_verifier.app import create_app as create_verifier
from axiom_verifier.settings import VerifierSettings

APPS: dict[str, Callable[[], web.Application]] = {
    "gateway": lambda: create_gateway(GatewaySettings.load()),
    "payments": lambda: create_payments(PaymentsSettings.load()),
    "verifier": lambda: create_verifier(VerifierSettings.load()),
    "notifier": lambda: create_notifier(NotifierSettings.load()),
    "amadeus-proxy": lambda: create_amadeus_proxy(
        AmadeusProxySettings.load(amadeus_client_id="id", amadeus_client_secret="secret")
    ),
}


def served(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of everything the router answers (HEAD rides along with GET)."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        if isinstance(resource, StaticResource):
            found.add(("GET", resource.canonical))
            continue
        for route in resource:
            if route.method != "HEAD":
                found.add((route.method, resource.canonical))
    return found


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_served_route_is_in_the_table(name: str) -> None:
    app = APPS[name]()
    table = {route.key for route in route_table(app)}
    assert served(app) == table
    # The probes every service has, internal and never rate limited.
    for path in ("/healthz", "/readyz", "/metrics"):
        (probe,) = [r for r in route_table(app) if r.path == path]
        assert probe.internal
        assert probe.rate_limit is RateLimitClass.NONE


def test_the_gateway_documents_every_route_not_marked_internal() -> None:
    app = APPS["gateway"]()
    document: dict[str, Any] = app[openapi_key]
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    public = {route.key for route in route_table(app) if not route.internal}
    internal = {route.key for route in route_table(app) if route.internal}
    assert documented == public
    assert internal == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/static"),
    }


@pytest.mark.parametrize("name", ["payments", "verifier", "notifier", "amadeus-proxy"])
def test_internal_services_publish_no_public_route(name: str) -> None:
    """Only the gateway faces the internet: every other app's routes are internal (the
    notifier's stream is reached through the gateway, which documents it)."""
    assert all(route.internal for route in route_table(APPS[name]()))


def test_features_and_rate_limits_come_from_the_table() -> None:
    table = {route.key: route for route in route_table(APPS["gateway"]())}
    assert {key for key, route in table.items() if route.feature == "solana_payments"} == {
        ("POST", "/api/pay/req/{order_id}"),
        ("POST", "/api/pay/verify"),
        ("POST", "/api/refunds/req/{refund_id}"),
    }
    assert {key for key, route in table.items() if route.rate_limit is RateLimitClass.PAYMENT} == {
        ("POST", "/api/pay/req/{order_id}"),
        ("POST", "/api/pay/verify"),
        ("POST", "/api/refunds/req/{refund_id}"),
    }
    for key, route in table.items():
        if key[1].startswith("/api/proxy/"):
            assert route.feature == "amadeus"
        if key[1].startswith("/api/webhooks/"):
            assert route.feature in {"helius_ingest", "paymob_ingest"}


def test_a_route_declared_twice_is_refused() -> None:
    from axiom_shared.routes import Route, add_routes

    async def handler(_request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    add_routes(app, [Route("GET", "/x", handler)])
    with pytest.raises(ValueError, match="declared twice"):
        add_routes(app, [Route("GET", "/x", handler)])
