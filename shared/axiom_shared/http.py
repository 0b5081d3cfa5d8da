"""aiohttp plumbing shared by every service: one error format, correlation ids, route metrics,
and strict JSON body parsing (content type, size, unknown fields) into pydantic models."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import Histogram
from pydantic import BaseModel, TypeAdapter, ValidationError

from axiom_shared.errors import ApiError, ErrorDetail, validation_error
from axiom_shared.logging import (
    CORRELATION_HEADER,
    bind_correlation_id,
    get_logger,
    unbind_correlation_id,
)
from axiom_shared.metrics import HTTP_REQUEST_SECONDS

log = get_logger(__name__)

T = TypeVar("T", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_MAX_BODY = 64 * 1024
#: Longest request line (method, path and query) the HTTP parser takes; longer ones are answered
#: by aiohttp itself (400, plain text). aiohttp's 8190 is too short for a documented parameter:
#: a 2048-character QR `url` is up to 24 KiB once UTF-8 and percent-encoded.
MAX_REQUEST_LINE = 32 * 1024
#: Seconds a request body may take to arrive (the app's `http_body_timeout` when set).
DEFAULT_BODY_TIMEOUT = 10.0
body_timeout_key = web.AppKey("body_timeout", float)
#: Probes and scrapes: frequent and uninteresting, not logged.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(err: ApiError) -> web.Response:
    return json_response(err.body(), status=err.status, headers=err.headers)


_ANY_JSON: TypeAdapter[Any] = TypeAdapter(Any)


def json_response(
    model: BaseModel | list[Any] | dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    # Encoded by pydantic-core (Rust), also for plain dicts: a 7 KB Amadeus answer takes 22 µs
    # where the stdlib encoder took 62.
    body = (
        model.model_dump_json(by_alias=True).encode()
        if isinstance(model, BaseModel)
        else _ANY_JSON.dump_json(model)
    )
    return web.Response(
        body=body,
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


_INVALID_JSON = ApiError(
    400,
    "invalid_json",
    "the body is not valid JSON",
    [ErrorDetail(problem="could not parse the body as JSON")],
)


async def _json_bytes(request: web.Request, max_bytes: int) -> bytes:
    if request.content_type != "application/json":
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    return await read_body(request, max_bytes)


async def read_json(
    request: web.Request, model: type[T], *, max_bytes: int = DEFAULT_MAX_BODY
) -> T:
    """Parse the body as `model`: 415 unless JSON, 413 when too large, 400 when not JSON,
    422 naming each bad or unknown field."""
    body = await _json_bytes(request, max_bytes)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            raise _INVALID_JSON from None
        raise validation_error(exc) from None


async def read_json_value(request: web.Request, *, max_bytes: int = DEFAULT_MAX_BODY) -> Any:
    """The body as plain JSON (for bodies shaped by others, e.g. webhooks): 415, 413, 400 as
    `read_json`; the caller validates the shape."""
    body = await _json_bytes(request, max_bytes)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _INVALID_JSON from None


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body: 413 past `max_bytes`, 408 when it does not arrive in time.

    `content.read(n)` returns what has arrived so far, not the whole body: it is called until
    the end of the body, so a body split over several TCP segments is read whole."""
    too_large = ApiError(413, "payload_too_large", f"the body must be at most {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.config_dict.get(body_timeout_key, DEFAULT_BODY_TIMEOUT)):
            while chunk := await request.content.read(max_bytes + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            "the body did not arrive in time",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


#: The status recorded for a request whose client left before it was answered.
CLIENT_CLOSED = 499


#: Methods named in the metrics as they are; any other is "other". The HTTP parser refuses a
#: made-up method but passes every one it knows (WebDAV's, PURGE...): one series each else.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@functools.lru_cache(maxsize=4096)
def _request_timer(service: str, route: str, method: str, status: int) -> Histogram:
    """The request-duration series of a service, route, method and status (looked up once:
    `labels()` validates and locks on every call)."""
    return HTTP_REQUEST_SECONDS.labels(
        service=service,
        route=route,
        method=method if method in _METHODS else "other",
        status=str(status),
    )


def http_middlewares(service: str) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        cid = bind_correlation_id(request.headers.get(CORRELATION_HEADER))
        started = time.perf_counter()
        route = _route_name(request)
        status = 500
        try:
            response = await _answer(request, handler)
            status = response.status
            if not response.prepared:
                response.headers[CORRELATION_HEADER] = cid
            return response
        except asyncio.CancelledError:
            # The client went away (or the server is stopping) before the answer was done:
            # counted as nginx's 499, not as a failure of ours.
            status = CLIENT_CLOSED
            raise
        finally:
            elapsed = time.perf_counter() - started
            _request_timer(service, route, request.method, status).observe(elapsed)
            if route not in _QUIET_ROUTES:
                # The path without its query string: a query may carry a credential (hmac=).
                log.info(
                    "request",
                    method=request.method,
                    path=request.path[:200],
                    status=status,
                    ms=round(elapsed * 1000, 1),
                )
            unbind_correlation_id()

    return [observe]


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        if err.status >= 500:
            log.warning("request failed", status=err.status, code=err.code)
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason.lower() if exc.reason else code
        if exc.status == 413:
            message = "the body is too large"
        http_err = ApiError(exc.status, code, message)
        if exc.status == 405:
            http_err.headers["Allow"] = exc.headers.get("Allow", "")
        return error_response(http_err)
    except ValidationError as exc:
        return error_response(validation_error(exc))
    except Exception:
        log.exception("unhandled error", path=request.path)
        return error_response(ApiError(500, "internal", "internal error"))


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


# --- who is on the other end of the socket ----------------------------------------------

Address = IPv4Address | IPv6Address


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address | None:
    """An IP address from a peer name or a forwarded-for hop (`1.2.3.4:80`, `[::1]:443`,
    `"[2001:db8::1]"`); None for anything else (`unknown`, obfuscated names, garbage).

    Cached (bounded): the same few peers ask again and again, and `ipaddress` parsing was
    about 5% of the gateway's time per request."""
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ip_address(value)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_of(request: web.Request) -> str | None:
    """The direct peer's address: the socket's, not anything a middleware rewrote."""
    transport = request.transport
    if transport is not None:
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple | list) and peername:
            return str(peername[0])
    return request.remote


def peer_address(request: web.Request) -> tuple[str | None, Address | None]:
    """The direct peer as the socket names it, and as an address when it is one."""
    peer_text = peer_of(request)
    return peer_text, parse_address(peer_text) if peer_text else None
