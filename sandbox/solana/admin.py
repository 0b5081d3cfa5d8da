"""Test controls: fault switches, statistics, manual slot advance and the slot clock."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from solders.pubkey import Pubkey

from sandbox.solana.chain import Commitment, TransactionRejected
from sandbox.solana.faults import FaultError
from sandbox.solana.keys import (
    chain_key,
    clock_key,
    dispatcher_key,
    faults_key,
    pubsub_key,
    rpc_key,
)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad_request(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[faults_key].settings.to_dict())


async def set_faults(request: web.Request) -> web.Response:
    body = await _json_body(request)
    injector = request.app[faults_key]
    if body.pop("reset", False):
        injector.reset()
    try:
        settings = injector.update(body)
    except FaultError as exc:
        raise _bad_request(str(exc)) from exc
    if not settings.webhook_reorder:
        request.app[dispatcher_key].flush_held()
    return web.json_response(settings.to_dict())


async def reset_faults(request: web.Request) -> web.Response:
    settings = request.app[faults_key].reset()
    request.app[dispatcher_key].flush_held()
    return web.json_response(settings.to_dict())


async def get_stats(request: web.Request) -> web.Response:
    chain = request.app[chain_key]
    dispatcher = request.app[dispatcher_key]
    pubsub = request.app[pubsub_key]
    stats = {
        "slot": chain.slot,
        "confirmed_slot": chain.commitment_slot(Commitment.CONFIRMED),
        "finalized_slot": chain.commitment_slot(Commitment.FINALIZED),
        "tx_count": chain.tx_count,
        "rpc_requests": request.app[rpc_key].request_count,
        "webhooks_registered": len(dispatcher.webhooks),
        **dispatcher.stats.to_json(),
        "pubsub_url": pubsub.url,
        "pubsub_connections": len(pubsub.connections),
        "pubsub_connections_dropped": pubsub.stats.connections_dropped,
        "pubsub_subscriptions": len(pubsub.registry),
        "pubsub_notifications": dict(pubsub.registry.sent),
    }
    return web.json_response(stats)


async def advance(request: web.Request) -> web.Response:
    body = await _json_body(request)
    slots = body.get("slots", 1)
    if not isinstance(slots, int) or isinstance(slots, bool) or not 0 <= slots <= 100_000:
        raise _bad_request("slots must be an integer in [0, 100000]")
    chain = request.app[chain_key]
    chain.advance(slots)
    return web.json_response(
        {
            "slot": chain.slot,
            "confirmed_slot": chain.commitment_slot(Commitment.CONFIRMED),
            "finalized_slot": chain.commitment_slot(Commitment.FINALIZED),
        }
    )


async def set_clock(request: web.Request) -> web.Response:
    body = await _json_body(request)
    running = body.get("running")
    interval = body.get("slot_interval")
    if running is not None and not isinstance(running, bool):
        raise _bad_request("running must be a boolean")
    if interval is not None and (not isinstance(interval, int | float) or interval < 0):
        raise _bad_request("slot_interval must be a number >= 0")
    clock = request.app[clock_key]
    clock.set(running=running, interval=None if interval is None else float(interval))
    return web.json_response({"running": clock.running, "slot_interval": clock.interval})


async def get_clock(request: web.Request) -> web.Response:
    """The clock's setting and what it really did: slots made, and the seconds between the
    newest ones (the bench reads them to see whether anything slows the clock)."""
    clock = request.app[clock_key]
    return web.json_response(
        {
            "running": clock.running,
            "slot_interval": clock.interval,
            "ticks": clock.ticks,
            "recent_intervals": list(clock.recent_intervals),
        }
    )


async def mint(request: web.Request) -> web.Response:
    """Test USDC for a wallet: `{"owner": base58, "amount": base units}` → the MintTo
    transaction's signature (the sandbox's `requestAirdrop` for tokens)."""
    body = await _json_body(request)
    amount = body.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 2**63:
        raise _bad_request("amount must be an integer of base units > 0")
    try:
        owner = Pubkey.from_string(str(body.get("owner")))
    except ValueError:
        raise _bad_request("owner must be a base58 wallet address") from None
    try:
        record = request.app[chain_key].mint_tokens(owner, amount)
    except TransactionRejected as exc:
        raise _bad_request(f"mint failed: {exc}") from exc
    if record.err is not None:
        raise _bad_request(f"mint failed: {record.err}")
    return web.json_response({"signature": str(record.signature), "slot": record.slot})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/mint", mint)
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", set_faults)
    app.router.add_delete("/admin/faults", reset_faults)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_post("/admin/advance", advance)
    app.router.add_get("/admin/clock", get_clock)
    app.router.add_post("/admin/clock", set_clock)
