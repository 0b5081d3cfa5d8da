"""The Amadeus proxy: owns the Amadeus token (in Redis) and the bookings DB."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_shared.db import Database
from axiom_shared.migrations import Migration, load_migrations
from axiom_shared.service import (
    create_service_app,
    database_context,
    redis_context,
    run_service,
)
from axiom_shared.settings import secret_value

bookings_db_key = web.AppKey("bookings_db", Database)


def bookings_migrations() -> list[Migration]:
    return load_migrations(files("axiom_amadeus_proxy") / "migrations")


def create_app(settings: AmadeusProxySettings) -> web.Application:
    app = create_service_app(settings)
    app.cleanup_ctx.append(redis_context(settings.redis_url, settings.redis_timeout))
    app.cleanup_ctx.append(
        database_context(
            bookings_db_key,
            "bookings_db",
            settings.bookings_db_url,
            secret_value(settings.bookings_db_auth_token),
            bookings_migrations(),
        )
    )
    return app


def main() -> None:
    run_service(AmadeusProxySettings, create_app)
