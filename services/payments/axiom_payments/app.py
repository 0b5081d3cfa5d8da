"""The payments service: owns the payments DB and every payment's state."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from axiom_payments.settings import PaymentsSettings
from axiom_shared.db import Database
from axiom_shared.migrations import Migration, load_migrations
from axiom_shared.service import create_service_app, database_context, run_service
from axiom_shared.settings import secret_value

payments_db_key = web.AppKey("payments_db", Database)


def payments_migrations() -> list[Migration]:
    return load_migrations(files("axiom_payments") / "migrations")


def create_app(settings: PaymentsSettings) -> web.Application:
    app = create_service_app(settings)
    app.cleanup_ctx.append(
        database_context(
            payments_db_key,
            "payments_db",
            settings.turso_db_url,
            secret_value(settings.turso_db_auth_token),
            payments_migrations(),
        )
    )
    return app


def main() -> None:
    run_service(PaymentsSettings, create_app)
