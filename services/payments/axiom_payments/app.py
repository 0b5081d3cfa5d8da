"""The payments service: owns the payments DB and every payment's state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from aiohttp import web
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey

from axiom_payments import store
from axiom_payments.catalog import Catalog, load_catalog
from axiom_payments.creation import Creator
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.outbox import OutboxRelay
from axiom_payments.scheduler import Scheduler
from axiom_payments.settings import DEV_MERCHANT_WALLET, PaymentsSettings
from axiom_payments.solana_pay import load_keypair
from axiom_shared.db import Database
from axiom_shared.errors import not_found
from axiom_shared.logging import get_logger
from axiom_shared.migrations import Migration, load_migrations
from axiom_shared.nats import Endpoint, JetStreamConsumer, serve
from axiom_shared.schemas import (
    CreatePaymentInput,
    CreatePaymentResult,
    GetCatalogInput,
    GetCatalogResult,
    GetPaymentInput,
    GetPaymentResult,
    MatchPaymentsInput,
    MatchPaymentsResult,
    PaymentVerdict,
)
from axiom_shared.service import (
    add_readiness_check,
    bus_key,
    create_service_app,
    database_context,
    run_service,
)
from axiom_shared.settings import secret_value
from axiom_shared.topology import (
    PAYMENTS_CATALOG,
    PAYMENTS_CREATE,
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    PAYMENTS_VERDICTS,
)

log = get_logger(__name__)

payments_db_key = web.AppKey("payments_db", Database)
catalog_key = web.AppKey("catalog", Catalog)
relay_key = web.AppKey("outbox_relay", OutboxRelay)


def payments_migrations() -> list[Migration]:
    return load_migrations(files("axiom_payments") / "migrations")


def create_app(settings: PaymentsSettings) -> web.Application:
    app = create_service_app(settings)
    # Read at start-up: a bad catalogue or key stops the service before it takes any work.
    app[catalog_key] = load_catalog(settings.catalog_path)
    key = secret_value(settings.solana_private_key)
    fee_payer = load_keypair(key) if key else None
    merchant = settings.merchant_wallet or (
        str(fee_payer.pubkey()) if fee_payer else DEV_MERCHANT_WALLET
    )
    app.cleanup_ctx.append(
        database_context(
            payments_db_key,
            "payments_db",
            settings.turso_db_url,
            secret_value(settings.turso_db_auth_token),
            payments_migrations(),
        )
    )

    async def payments_service(app: web.Application) -> AsyncIterator[None]:
        db, bus = app[payments_db_key], app[bus_key]
        rpc = AsyncClient(settings.solana_rpc_url, timeout=settings.solana_rpc_timeout)
        relay = OutboxRelay(db, bus.js)
        relay.start()
        app[relay_key] = relay
        creator = Creator(
            db=db,
            catalog=app[catalog_key],
            rpc=rpc,
            relay=relay,
            merchant_wallet=Pubkey.from_string(merchant),
            fee_payer=fee_payer,
            payment_ttl=timedelta(seconds=settings.payment_ttl_seconds),
        )

        async def get_payment(request: GetPaymentInput) -> GetPaymentResult:
            row = await store.get_payment(db, request.payment_id)
            if row is None:
                raise not_found("payment")
            return GetPaymentResult(
                payment=store.to_view(row), correlation_id=row["correlation_id"]
            )

        async def get_catalog(_request: GetCatalogInput) -> GetCatalogResult:
            return GetCatalogResult(items=app[catalog_key].items)

        async def create_payment(request: CreatePaymentInput) -> CreatePaymentResult:
            return await creator.create(request)

        async def match_payments(request: MatchPaymentsInput) -> MatchPaymentsResult:
            since = datetime.now(UTC) - timedelta(seconds=settings.expired_lookback_seconds)
            rows = await store.open_payments_by_reference(db, list(request.references), since)
            return MatchPaymentsResult(
                payments=[store.to_view(row) for row in rows],
                correlation_ids={
                    row["public_id"]: row["correlation_id"] for row in rows if row["correlation_id"]
                },
            )

        lifecycle = Lifecycle(db=db, relay=relay, catalog=app[catalog_key])
        verdicts = JetStreamConsumer(
            bus.nc,
            bus.js,
            PAYMENTS_VERDICTS,
            PaymentVerdict,
            lifecycle.on_verdict,
            concurrency=16,
        )
        verdicts.start()
        scheduler = Scheduler(
            lifecycle,
            bus.js,
            interval=settings.reconcile_interval_seconds,
            expired_lookback=timedelta(seconds=settings.expired_lookback_seconds),
        )
        scheduler.start()

        async def working() -> bool:
            return verdicts.running

        add_readiness_check(app, "verdicts", working)

        service = await serve(
            bus.nc,
            "payments",
            "1.0.0",
            [
                Endpoint("create", PAYMENTS_CREATE, CreatePaymentInput, create_payment),
                Endpoint("get", PAYMENTS_GET, GetPaymentInput, get_payment),
                Endpoint("catalog", PAYMENTS_CATALOG, GetCatalogInput, get_catalog),
                Endpoint("match", PAYMENTS_MATCH, MatchPaymentsInput, match_payments),
            ],
            description="payments: create, status, catalogue",
        )
        log.info("payments ready", merchant=merchant, fee_payer=bool(fee_payer))
        yield
        await service.stop()
        await scheduler.stop()
        await verdicts.stop(settings.shutdown_timeout)
        await relay.stop()
        await rpc.close()

    app.cleanup_ctx.append(payments_service)
    return app


def main() -> None:
    run_service(PaymentsSettings, create_app)
