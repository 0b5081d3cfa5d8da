"""The notifier: every replica reads every payment status change and fans it out to the
browsers watching that payment, over Server-Sent Events (`streams.py`)."""

from __future__ import annotations

import resource
from contextlib import AsyncExitStack

from aiohttp import web
from nats.aio.msg import Msg

from axiom_notifier import streams
from axiom_notifier.hub import StatusHub
from axiom_notifier.settings import NotifierSettings, settings_key
from axiom_notifier.streams import hub_key, install_streams
from axiom_shared.logging import get_logger
from axiom_shared.nats import JetStreamConsumer
from axiom_shared.payments_client import install_latest_status
from axiom_shared.routes import add_routes
from axiom_shared.schemas import PaymentStatusChanged
from axiom_shared.service import (
    add_readiness_check,
    bus_key,
    create_service_app,
    lifecycle,
    run_service,
)
from axiom_shared.topology import NOTIFIER_STATUS_FEED

__all__ = ["create_app", "hub_key", "main"]

log = get_logger(__name__)


def create_app(settings: NotifierSettings) -> web.Application:
    app = create_service_app(settings, settings_key)
    app[hub_key] = StatusHub()
    install_latest_status(app)
    install_streams(app, settings)
    add_routes(app, streams.ROUTES)

    async def status_feed(app: web.Application, stack: AsyncExitStack) -> None:
        bus = app[bus_key]
        hub = app[hub_key]
        stack.callback(hub.close_all)

        async def on_status(event: PaymentStatusChanged, _msg: Msg) -> None:
            watchers = hub.publish(event)
            log.info(
                "status change fanned out",
                payment_id=event.payment.payment_id,
                status=event.payment.status.value,
                version=event.payment.version,
                streams=watchers,
            )

        consumer = JetStreamConsumer(
            bus.nc,
            bus.js,
            NOTIFIER_STATUS_FEED,
            PaymentStatusChanged,
            on_status,
            replica_id=settings.replica_id,
        )
        consumer.start()
        stack.push_async_callback(consumer.stop, settings.shutdown_timeout)

        async def feed_running() -> bool:
            return consumer.running

        add_readiness_check(app, "status_feed", feed_running)

    app.cleanup_ctx.append(lifecycle(status_feed))
    return app


def raise_open_files_limit() -> int:
    """Every SSE stream holds a socket: lift the soft file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit", soft=soft, error=str(exc))
            return soft
        return hard
    return soft


def main() -> None:
    raise_open_files_limit()
    run_service(NotifierSettings, create_app)
