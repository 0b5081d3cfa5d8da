"""The Amadeus proxy: owns the Amadeus token (in Redis) and the bookings DB, and serves
`amadeus.search` and `amadeus.book` on NATS (queue group, so replicas share them)."""

from __future__ import annotations

import hashlib
from contextlib import AsyncExitStack
from importlib.resources import files

import aiohttp
from aiohttp import web

from axiom_amadeus_proxy.booking import Bookings
from axiom_amadeus_proxy.client import AmadeusClient
from axiom_amadeus_proxy.handlers import SERVICE_NAME, SERVICE_VERSION, endpoints
from axiom_amadeus_proxy.pacing import Pacer, PacingPolicy
from axiom_amadeus_proxy.paymob import paymob_consumer_context
from axiom_amadeus_proxy.search import FlightSearch
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_amadeus_proxy.tokens import TokenCache
from axiom_shared.db import Database
from axiom_shared.migrations import Migration, load_migrations
from axiom_shared.nats import InFlight, serve
from axiom_shared.service import (
    CleanupContext,
    bus_key,
    create_service_app,
    database_context,
    lifecycle,
    redis_context,
    redis_key,
    run_service,
)
from axiom_shared.settings import secret_value

bookings_db_key = web.AppKey("bookings_db", Database)
bookings_key = web.AppKey("bookings", Bookings)


def bookings_migrations() -> list[Migration]:
    return load_migrations(files("axiom_amadeus_proxy") / "migrations")


def redis_namespace(settings: AmadeusProxySettings) -> str:
    """Amadeus counts quota and issues tokens per client id: so do our keys (hashed, short)."""
    client = hashlib.sha256(settings.amadeus_client_id.encode()).hexdigest()[:16]
    return f"{settings.amadeus_redis_prefix}:{client}"


def create_app(settings: AmadeusProxySettings) -> web.Application:
    app = create_service_app(settings)
    app.cleanup_ctx.append(redis_context(settings))
    app.cleanup_ctx.append(
        database_context(
            bookings_db_key,
            "bookings_db",
            settings.bookings_db_url,
            secret_value(settings.bookings_db_auth_token),
            bookings_migrations(),
            sync_url=settings.bookings_db_sync_url,
        )
    )
    app.cleanup_ctx.append(_amadeus_context(settings))
    app.cleanup_ctx.append(paymob_consumer_context(bookings_db_key))
    return app


def _amadeus_context(settings: AmadeusProxySettings) -> CleanupContext:
    """The upstream client (HTTP session, token cache, pacer), the booking flow, and the NATS
    endpoints; on shutdown: stop taking requests, finish those in flight, close the session."""

    async def amadeus(app: web.Application, stack: AsyncExitStack) -> None:
        redis = app[redis_key]
        namespace = redis_namespace(settings)
        session = aiohttp.ClientSession(raise_for_status=False)
        stack.push_async_callback(session.close)
        pacer = Pacer(
            redis,
            f"{namespace}:pace",
            PacingPolicy(
                rate_per_second=settings.amadeus_rate_per_second,
                min_interval=settings.amadeus_min_interval,
                guard=settings.amadeus_pacing_guard,
                max_wait=settings.amadeus_pacing_max_wait,
            ),
        )
        client = AmadeusClient(
            session,
            settings.amadeus_base_url,
            settings.amadeus_client_id,
            settings.amadeus_client_secret,
            pacer=pacer,
            timeout=settings.amadeus_timeout,
            attempts=settings.amadeus_search_attempts,
            retry_base_delay=settings.amadeus_retry_base_delay,
        )
        client.tokens = TokenCache(
            redis,
            namespace,
            client.fetch_token,
            margin=settings.amadeus_token_margin,
            # The lock outlives one token call, so a live holder never loses it.
            lock_ttl=settings.amadeus_timeout + 2.0,
            wait=settings.amadeus_token_wait,
        )
        bookings = Bookings(
            app[bookings_db_key], client, stale_after=settings.amadeus_booking_stale_after
        )
        app[bookings_key] = bookings
        in_flight = InFlight(settings.amadeus_max_concurrency)
        stack.push_async_callback(in_flight.wait, settings.shutdown_timeout)
        service = await serve(
            app[bus_key].nc,
            SERVICE_NAME,
            SERVICE_VERSION,
            endpoints(FlightSearch(client), bookings),
            "Amadeus flight search and idempotent booking",
            in_flight=in_flight,
        )
        stack.push_async_callback(service.stop)

    return lifecycle(amadeus)


def main() -> None:
    run_service(AmadeusProxySettings, create_app)
