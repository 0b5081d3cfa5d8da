"""The notifier: every replica reads every payment status change and fans it out to the
browsers watching that payment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from nats.aio.msg import Msg

from axiom_notifier.hub import StatusHub
from axiom_notifier.settings import NotifierSettings
from axiom_shared.nats import JetStreamConsumer
from axiom_shared.schemas import PaymentStatusChanged
from axiom_shared.service import (
    add_readiness_check,
    bus_key,
    create_service_app,
    run_service,
)
from axiom_shared.topology import NOTIFIER_STATUS_FEED

hub_key = web.AppKey("hub", StatusHub)


def create_app(settings: NotifierSettings) -> web.Application:
    app = create_service_app(settings)
    app[hub_key] = StatusHub()

    async def status_feed(app: web.Application) -> AsyncIterator[None]:
        bus = app[bus_key]
        hub = app[hub_key]

        async def on_status(event: PaymentStatusChanged, _msg: Msg) -> None:
            hub.publish(event)

        consumer = JetStreamConsumer(
            bus.nc,
            bus.js,
            NOTIFIER_STATUS_FEED,
            PaymentStatusChanged,
            on_status,
            replica_id=settings.replica_id,
        )
        consumer.start()

        async def feed_running() -> bool:
            return consumer.running

        add_readiness_check(app, "status_feed", feed_running)
        yield
        await consumer.stop(settings.shutdown_timeout)
        hub.close_all()

    app.cleanup_ctx.append(status_feed)
    return app


def main() -> None:
    run_service(NotifierSettings, create_app)
