"""The one error format, for every kind of bad input, and never a 500 for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel, ConfigDict, Field

from axiom_shared.errors import ApiError
from axiom_shared.http import http_middlewares, json_response, read_json


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=10)
    quantity: int = Field(ge=1, le=5)


async def create(request: web.Request) -> web.Response:
    order = await read_json(request, Order, max_bytes=1024)
    return json_response(order, status=201)


async def boom(_request: web.Request) -> web.Response:
    raise RuntimeError("database password is hunter2")


async def refuse(_request: web.Request) -> web.Response:
    raise ApiError(409, "in_flight", "the first request is still running")


@pytest.fixture
async def client() -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    app = web.Application(middlewares=http_middlewares("unit"), client_max_size=4096)
    app.router.add_post("/orders", create)
    app.router.add_get("/boom", boom)
    app.router.add_get("/refuse", refuse)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(str(server.make_url(""))) as session:
        yield session, str(server.make_url(""))
    await server.close()


async def _call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: object
) -> tuple[int, dict[str, object]]:
    async with session.request(method, path, **kwargs) as resp:  # type: ignore[arg-type]
        assert resp.content_type == "application/json"
        body = await resp.json()
        return resp.status, body


async def test_valid_body_is_parsed(client: tuple[aiohttp.ClientSession, str]) -> None:
    session, _ = client
    status, body = await _call(session, "POST", "/orders", json={"order_id": "a", "quantity": 2})
    assert (status, body) == (201, {"order_id": "a", "quantity": 2})


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"data": "not json", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_json",
        ),
        (
            {"data": "order_id=a", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"json": {"order_id": "a"}}, 422, "validation_error"),
        ({"json": {"order_id": "a", "quantity": 2, "admin": True}}, 422, "validation_error"),
        ({"json": {"order_id": "a", "quantity": -1}}, 422, "validation_error"),
        ({"json": {"order_id": "a", "quantity": 10**30}}, 422, "validation_error"),
        ({"json": ["a", "list"]}, 422, "validation_error"),
        ({"json": {"order_id": "x" * 2000, "quantity": 1}}, 413, "payload_too_large"),
        (
            {
                "data": b"{" + b" " * 1_000_000 + b"}",
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "payload_too_large",
        ),
    ],
)
async def test_bad_input_gets_a_4xx_json_error(
    client: tuple[aiohttp.ClientSession, str], kwargs: dict[str, object], status: int, code: str
) -> None:
    session, _ = client
    got_status, body = await _call(session, "POST", "/orders", **kwargs)
    assert got_status == status
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert isinstance(error["details"], list)


async def test_validation_error_names_the_field(client: tuple[aiohttp.ClientSession, str]) -> None:
    session, _ = client
    _, body = await _call(session, "POST", "/orders", json={"order_id": "a", "quantity": 9})
    error = body["error"]
    assert isinstance(error, dict)
    assert [d["field"] for d in error["details"]] == ["quantity"]


async def test_routing_errors_use_the_same_format(
    client: tuple[aiohttp.ClientSession, str],
) -> None:
    session, _ = client
    status, body = await _call(session, "GET", "/nowhere")
    assert status == 404
    assert body["error"] == {"code": "not_found", "message": "not found", "details": []}
    status, body = await _call(session, "GET", "/orders")
    assert status == 405
    status, body = await _call(session, "GET", "/refuse")
    assert status == 409
    assert body["error"] == {
        "code": "in_flight",
        "message": "the first request is still running",
        "details": [],
    }


async def test_unexpected_errors_are_500_without_internals(
    client: tuple[aiohttp.ClientSession, str],
) -> None:
    session, _ = client
    status, body = await _call(session, "GET", "/boom")
    assert status == 500
    assert body == {"error": {"code": "internal", "message": "internal error", "details": []}}
    assert "hunter2" not in str(body)


async def test_correlation_id_is_echoed(client: tuple[aiohttp.ClientSession, str]) -> None:
    session, _ = client
    async with session.get("/nowhere", headers={"X-Correlation-ID": "abc-1"}) as resp:
        assert resp.headers["X-Correlation-ID"] == "abc-1"
    async with session.get("/nowhere") as resp:
        assert len(resp.headers["X-Correlation-ID"]) == 32
