"""Every dependency of the sandbox app, as typed application keys."""

from __future__ import annotations

from aiohttp import web

from sandbox.solana.chain import Chain
from sandbox.solana.clock import SlotClock
from sandbox.solana.config import SandboxConfig
from sandbox.solana.faults import FaultInjector
from sandbox.solana.pubsub import PubSubServer
from sandbox.solana.rpc import RpcHandler
from sandbox.solana.webhooks import WebhookDispatcher

config_key = web.AppKey("config", SandboxConfig)
chain_key = web.AppKey("chain", Chain)
rpc_key = web.AppKey("rpc", RpcHandler)
faults_key = web.AppKey("faults", FaultInjector)
dispatcher_key = web.AppKey("webhook_dispatcher", WebhookDispatcher)
clock_key = web.AppKey("slot_clock", SlotClock)
pubsub_key = web.AppKey("pubsub", PubSubServer)
