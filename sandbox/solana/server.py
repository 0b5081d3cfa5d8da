"""The sandbox's HTTP app: JSON-RPC on `/`, Helius webhook API on `/v0/webhooks`, test controls
on `/admin/*`; beside it, on its own port (RPC port + 1), the PubSub WebSocket (pubsub.py),
started and stopped with the app. `create_app` builds it; tests build it with the same
factory."""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from axiom_shared.logging import configure_logging, get_logger
from sandbox.solana import admin
from sandbox.solana.chain import Chain
from sandbox.solana.clock import SlotClock
from sandbox.solana.config import SandboxConfig
from sandbox.solana.faults import FaultInjector
from sandbox.solana.keys import (
    chain_key,
    clock_key,
    config_key,
    dispatcher_key,
    faults_key,
    pubsub_key,
    rpc_key,
)
from sandbox.solana.pubsub import PubSubServer
from sandbox.solana.rpc import NODE_UNHEALTHY, PARSE_ERROR, RpcError, RpcHandler, error_response
from sandbox.solana.webhooks import Webhook, WebhookDispatcher, WebhookValidationError

log = get_logger(__name__)


def create_app(config: SandboxConfig) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    chain = Chain(config)
    faults = FaultInjector(config.faults)
    app[config_key] = config
    app[chain_key] = chain
    app[faults_key] = faults
    app[rpc_key] = RpcHandler(chain, faults)
    app[dispatcher_key] = WebhookDispatcher(chain, config, faults)
    app[clock_key] = SlotClock(chain, config.slot_interval)
    app[pubsub_key] = PubSubServer(chain, config)
    app.cleanup_ctx.append(_background)
    app.router.add_post("/", rpc_endpoint)
    app.router.add_get("/health", health)
    app.router.add_post("/v0/webhooks", create_webhook)
    app.router.add_get("/v0/webhooks", list_webhooks)
    app.router.add_get("/v0/webhooks/{webhook_id}", get_webhook)
    app.router.add_put("/v0/webhooks/{webhook_id}", edit_webhook)
    app.router.add_delete("/v0/webhooks/{webhook_id}", delete_webhook)
    admin.add_routes(app)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    dispatcher = app[dispatcher_key]
    clock = app[clock_key]
    pubsub = app[pubsub_key]
    await pubsub.start()
    await dispatcher.start()
    await clock.start()
    log.info(
        "solana_sandbox_started",
        slot=app[chain_key].slot,
        slot_interval=clock.interval,
        finality_depth=app[config_key].finality_depth,
        webhook_commitment=app[config_key].webhook_commitment,
        pubsub_url=pubsub.url,
    )
    yield
    await clock.stop()
    await pubsub.stop()
    await dispatcher.close()


# --- JSON-RPC -----------------------------------------------------------------------------------


async def rpc_endpoint(request: web.Request) -> web.StreamResponse:
    faults = request.app[faults_key]
    settings = faults.settings
    if settings.rpc_latency_seconds > 0:
        await asyncio.sleep(settings.rpc_latency_seconds)
    raw = await request.read()
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(error_response(None, RpcError(PARSE_ERROR, "Parse error")))
    if faults.fail_rpc():
        if settings.rpc_failure_mode == "http_503":
            return web.Response(status=503, text="Service Unavailable")
        unhealthy = RpcError(NODE_UNHEALTHY, "Node is behind by 42 slots", {"numSlotsBehind": 42})
        items = payload if isinstance(payload, list) and payload else [payload]
        answers = [
            error_response(item.get("id") if isinstance(item, dict) else None, unhealthy)
            for item in items
        ]
        return web.json_response(answers if isinstance(payload, list) else answers[0])
    response = await request.app[rpc_key].handle(payload)
    if response is None:
        return web.Response(status=200)
    return web.json_response(response)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


# --- Helius webhook API -------------------------------------------------------------------------


def _check_api_key(request: web.Request) -> None:
    expected = request.app[config_key].helius_api_key
    if expected is None:
        return
    given = request.query.get("api-key", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "invalid api key"}), content_type="application/json"
        )


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


async def _body(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _error(web.HTTPBadRequest, f"invalid JSON: {exc}") from exc


async def create_webhook(request: web.Request) -> web.Response:
    _check_api_key(request)
    try:
        webhook = Webhook.from_body(await _body(request))
    except WebhookValidationError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    request.app[dispatcher_key].register(webhook)
    return web.json_response(webhook.to_json())


async def list_webhooks(request: web.Request) -> web.Response:
    _check_api_key(request)
    webhooks = request.app[dispatcher_key].webhooks.values()
    return web.json_response([webhook.to_json() for webhook in webhooks])


def _find(request: web.Request) -> Webhook:
    webhook = request.app[dispatcher_key].webhooks.get(request.match_info["webhook_id"])
    if webhook is None:
        raise _error(web.HTTPNotFound, "webhook not found")
    return webhook


async def get_webhook(request: web.Request) -> web.Response:
    _check_api_key(request)
    return web.json_response(_find(request).to_json())


async def edit_webhook(request: web.Request) -> web.Response:
    _check_api_key(request)
    current = _find(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "body must be a JSON object")
    merged = {**current.to_json(), **body}
    try:
        webhook = Webhook.from_body(merged, webhook_id=current.webhook_id)
    except WebhookValidationError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from exc
    request.app[dispatcher_key].register(webhook)
    return web.json_response(webhook.to_json())


async def delete_webhook(request: web.Request) -> web.Response:
    _check_api_key(request)
    webhook = _find(request)
    del request.app[dispatcher_key].webhooks[webhook.webhook_id]
    return web.Response(status=200)


# --- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    config = SandboxConfig.from_args(sys.argv[1:] if argv is None else argv)
    configure_logging("solana-sandbox", config.log_level)
    log.info(
        "solana_sandbox_listening",
        url=f"http://{config.host}:{config.port}",
        pubsub_port=config.pubsub_port_wanted or "free",
    )
    web.run_app(create_app(config), host=config.host, port=config.port, print=None)
