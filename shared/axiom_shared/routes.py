"""One table of routes per HTTP app: each route is declared once, with its method, path,
handler, request and response models, feature flag and rate-limit class. The router, the
OpenAPI document (`openapi.build_openapi`), the feature gates and the rate limits are all
derived from the table; `tests/unit/test_route_tables.py` fails when a route is served but
neither documented nor marked internal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RateLimitClass(StrEnum):
    """How the gateway's rate limiter counts a route's requests."""

    #: Per client, by the `RATE_LIMITS` rule whose prefix matches the route (none: unlimited).
    CLIENT = "client"
    #: A payment write: per client by `PAYMENT_RATE_LIMIT` (or a longer `RATE_LIMITS` prefix).
    PAYMENT = "payment"
    #: Never counted (probes, scrapes, the page and its files).
    NONE = "none"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str = ""
    #: The JSON body, as it is validated.
    body: type[BaseModel] | None = None
    #: Status → the JSON body answered with it (None: no JSON body, or see `response_docs`).
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    #: The success body is a JSON array of the model.
    array_response: bool = False
    parameters: Sequence[Mapping[str, Any]] = ()
    #: Responses documented as given (e.g. a `text/event-stream` or `image/svg+xml` 200).
    response_docs: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    #: The feature flag (`FEATURE_<NAME>`) that turns this route off, if any.
    feature: str | None = None
    rate_limit: RateLimitClass = RateLimitClass.CLIENT
    #: Served but deliberately not in the OpenAPI document (probes, metrics, the page).
    internal: bool = False
    #: A GET prefix whose files are served from this directory (`path` is the prefix).
    static_dir: str | None = None

    def __post_init__(self) -> None:
        if self.method != self.method.upper():
            raise ValueError(f"route {self.path}: method must be upper case")

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


async def _served_by_the_router(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()  # aiohttp's static resource answers; this is never called


def static_files(prefix: str, directory: str) -> Route:
    """`GET <prefix>/<file>`: the files of `directory` (internal, never rate limited)."""
    return Route(
        "GET",
        prefix.rstrip("/"),
        _served_by_the_router,
        internal=True,
        rate_limit=RateLimitClass.NONE,
        static_dir=directory,
    )


routes_key = web.AppKey("routes", dict[tuple[str, str], Route])


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    """Register `routes` on `app`'s router and in its table (a path and method once only)."""
    table = app.get(routes_key)
    if table is None:
        table = app[routes_key] = {}
    for route in routes:
        if route.key in table:
            raise ValueError(f"route {route.method} {route.path} is declared twice")
        table[route.key] = route
        if route.static_dir is not None:
            app.router.add_static(route.path, route.static_dir)
        elif route.method == "GET":
            app.router.add_get(route.path, route.handler)  # HEAD too, as aiohttp does
        else:
            app.router.add_route(route.method, route.path, route.handler)


def route_table(app: web.Application) -> list[Route]:
    return list(app.get(routes_key, {}).values())


def route_of(request: web.Request) -> Route | None:
    """The table entry of the route `request` matched (None: 404, 405 or a static file)."""
    match_info = request.match_info
    resource = match_info.route.resource
    if match_info.http_exception is not None or resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    table = request.config_dict.get(routes_key, {})
    return table.get((method, resource.canonical))
