"""The verifier: stateless; turns payment candidates into findings (receipts and observations)
by reading the chain at `finalized` commitment. Replicas share the durable consumers."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

from aiohttp import web

from axiom_shared.logging import get_logger
from axiom_shared.nats import JetStreamConsumer
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import HeliusItemReceived, VerificationRequested
from axiom_shared.service import (
    add_readiness_check,
    bus_key,
    create_service_app,
    lifecycle,
    run_service,
)
from axiom_shared.solana_rpc import SolanaRpc
from axiom_shared.topology import VERIFIER_CANDIDATES, VERIFIER_WEBHOOKS, ConsumerSpec
from axiom_verifier.seen import SeenWatch
from axiom_verifier.settings import VerifierSettings
from axiom_verifier.verifier import Verifier

log = get_logger(__name__)


def create_app(settings: VerifierSettings) -> web.Application:
    app = create_service_app(settings)

    async def verification(app: web.Application, stack: AsyncExitStack) -> None:
        bus = app[bus_key]
        rpc = SolanaRpc(settings.solana_rpc_url, settings.solana_rpc_timeout)
        stack.push_async_callback(rpc.close)
        verifier = Verifier(
            PaymentsClient(bus.nc, settings.request_timeout),
            bus.js,
            rpc,
            clock_skew=timedelta(seconds=settings.clock_skew_seconds),
        )

        def scaled(spec: ConsumerSpec) -> ConsumerSpec:
            delays = tuple(d * settings.retry_delay_scale for d in spec.retry_delays)
            return dataclasses.replace(spec, retry_delays=delays)

        consumers: list[JetStreamConsumer[Any]] = [
            JetStreamConsumer(
                bus.nc,
                bus.js,
                scaled(VERIFIER_CANDIDATES),
                VerificationRequested,
                verifier.on_candidate,
                concurrency=settings.concurrency,
            ),
            JetStreamConsumer(
                bus.nc,
                bus.js,
                scaled(VERIFIER_WEBHOOKS),
                HeliusItemReceived,
                verifier.on_webhook_item,
                concurrency=settings.concurrency,
            ),
        ]
        for consumer in consumers:
            consumer.start()
            stack.push_async_callback(consumer.stop, settings.shutdown_timeout)

        watched = settings.watched_wallet()
        if settings.seen_watch and watched:
            watch = SeenWatch(
                settings.pubsub_url(),
                watched,
                rpc,
                PaymentsClient(bus.nc, settings.request_timeout),
                bus.js,
                clock_skew=timedelta(seconds=settings.clock_skew_seconds),
            )
            watch.start()
            stack.push_async_callback(watch.stop)
        elif settings.seen_watch:
            log.warning("no MERCHANT_WALLET: payments are not shown as seen at confirmed")

        async def consuming() -> bool:
            return all(c.running for c in consumers)

        add_readiness_check(app, "consumers", consuming)

    app.cleanup_ctx.append(lifecycle(verification))
    return app


def main() -> None:
    run_service(VerifierSettings, create_app)
