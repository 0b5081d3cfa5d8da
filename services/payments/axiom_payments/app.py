"""The payments service: owns the payments DB and every payment's state."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from aiohttp import web
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from axiom_payments import ledger
from axiom_payments.catalog import Catalog, load_catalog
from axiom_payments.creation import Creator
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.outbox import OutboxRelay
from axiom_payments.refunds import RefundCaps, Refunder
from axiom_payments.scheduler import Scheduler
from axiom_payments.seen import SeenMarkers
from axiom_payments.settings import PaymentsSettings
from axiom_payments.solana_pay import load_keypair
from axiom_shared.db import Database
from axiom_shared.errors import not_found
from axiom_shared.logging import get_logger
from axiom_shared.migrations import Migration, load_migrations
from axiom_shared.nats import Endpoint, InFlight, JetStreamConsumer, serve
from axiom_shared.schemas import (
    CreatePaymentInput,
    CreatePaymentResult,
    Currency,
    GetCatalogInput,
    GetCatalogResult,
    GetPaymentInput,
    GetPaymentResult,
    GetRefundInput,
    MatchPaymentsInput,
    MatchPaymentsResult,
    PaymentFindings,
    PaymentSeen,
    RefundResult,
    RequestRefundInput,
)
from axiom_shared.service import (
    add_readiness_check,
    bus_key,
    create_service_app,
    database_context,
    lifecycle,
    run_service,
)
from axiom_shared.settings import secret_value
from axiom_shared.solana_rpc import RecentBlockhash, SolanaRpc
from axiom_shared.topology import (
    PAYMENTS_CATALOG,
    PAYMENTS_CREATE,
    PAYMENTS_FINDINGS,
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    PAYMENTS_REFUND_GET,
    PAYMENTS_REFUND_REQUEST,
    PAYMENTS_SEEN,
)

log = get_logger(__name__)

payments_db_key = web.AppKey("payments_db", Database)
catalog_key = web.AppKey("catalog", Catalog)


def payments_migrations() -> list[Migration]:
    return load_migrations(files("axiom_payments") / "migrations")


def merchant_keys(settings: PaymentsSettings) -> tuple[str, Keypair | None]:
    """Where payments are paid to, and the merchant's fee-payer key when it has one."""
    key = secret_value(settings.solana_private_key)
    fee_payer = load_keypair(key) if key else None
    return settings.merchant(str(fee_payer.pubkey()) if fee_payer else None), fee_payer


def refund_key(settings: PaymentsSettings) -> Keypair | None:
    """The hot-wallet refund key, when configured (never named in an error: it is a secret)."""
    secret = secret_value(settings.refund_private_key)
    if not secret:
        return None
    try:
        return load_keypair(secret)
    except (ValueError, TypeError):
        raise ValueError("REFUND_PRIVATE_KEY is not a valid Solana keypair") from None


def create_app(settings: PaymentsSettings) -> web.Application:
    app = create_service_app(settings)
    # Read at start-up: a bad catalogue or key stops the service before it takes any work.
    app[catalog_key] = load_catalog(settings.catalog_path)
    hot_wallet = refund_key(settings)
    merchant, fee_payer = merchant_keys(settings)
    app.cleanup_ctx.append(
        database_context(
            payments_db_key,
            "payments_db",
            settings.turso_db_url,
            secret_value(settings.turso_db_auth_token),
            payments_migrations(),
            sync_url=settings.turso_sync_url,
        )
    )

    async def payments_service(app: web.Application, stack: AsyncExitStack) -> None:
        db, bus = app[payments_db_key], app[bus_key]
        rpc = SolanaRpc(settings.solana_rpc_url, settings.solana_rpc_timeout)
        stack.push_async_callback(rpc.close)
        relay = OutboxRelay(db, bus.js)
        relay.start()
        stack.push_async_callback(relay.stop)
        creator = Creator(
            db=db,
            catalog=app[catalog_key],
            rpc=rpc,
            # A finalized blockhash, fetched once per slot and shared by every request.
            blockhashes=RecentBlockhash(rpc, max_age=settings.blockhash_max_age),
            relay=relay,
            merchant_wallet=Pubkey.from_string(merchant),
            fee_payer=fee_payer,
            payment_ttl=timedelta(seconds=settings.payment_ttl_seconds),
            tokens={
                Currency.USDC: (Pubkey.from_string(settings.usdc_mint), settings.usdc_decimals)
            },
            refund_wallet=hot_wallet.pubkey() if hot_wallet else None,
        )

        lookback = timedelta(seconds=settings.expired_lookback_seconds)
        lifecycle = Lifecycle(db=db, relay=relay, catalog=app[catalog_key], lookback=lookback)
        refunder = Refunder(
            lifecycle=lifecycle,
            rpc=rpc,
            blockhashes=creator.blockhashes,
            merchant_wallet=creator.merchant_wallet,
            hot_wallet=hot_wallet,
            caps={
                Currency.SOL: RefundCaps(
                    settings.refund_max_lamports, settings.refund_daily_max_lamports
                ),
                Currency.USDC: RefundCaps(settings.refund_max_usdc, settings.refund_daily_max_usdc),
            },
            ttl=timedelta(seconds=settings.refund_ttl_seconds),
            lookback=lookback,
        )

        async def get_payment(request: GetPaymentInput) -> GetPaymentResult:
            row = await ledger.get_payment(db, request.payment_id)
            if row is None:
                raise not_found("payment")
            watched = await ledger.refunds_of(db, row.id, datetime.now(UTC) - lookback)
            return GetPaymentResult(
                payment=row.view(),
                correlation_id=row.correlation_id,
                scan_cursor=row.scan_cursor,
                refunds=[refund.view() for refund in watched],
            )

        async def get_refund(request: GetRefundInput) -> RefundResult:
            return await refunder.get(request.refund_id)

        async def get_catalog(_request: GetCatalogInput) -> GetCatalogResult:
            return GetCatalogResult(items=creator.priced_items())

        async def create_payment(request: CreatePaymentInput) -> CreatePaymentResult:
            return await creator.create(request)

        async def match_payments(request: MatchPaymentsInput) -> MatchPaymentsResult:
            # Every status: a transaction naming two of our payments pays neither, and money
            # sent to a finished payment is still recorded (owed back).
            keys = list(dict.fromkeys(request.references))
            # And the payments whose watched refund request names one of them (its landing).
            rows, refunds = await ledger.matching(db, keys, datetime.now(UTC) - lookback)
            return MatchPaymentsResult(
                refunds=[refund.view() for refund in refunds],
                payments=[row.view() for row in rows],
                correlation_ids={
                    row.public_id: row.correlation_id for row in rows if row.correlation_id
                },
            )

        findings = JetStreamConsumer(
            bus.nc,
            bus.js,
            PAYMENTS_FINDINGS,
            PaymentFindings,
            lifecycle.on_findings,
            concurrency=settings.findings_concurrency,
        )
        findings.start()
        stack.push_async_callback(findings.stop, settings.shutdown_timeout)
        seen = JetStreamConsumer(
            bus.nc,
            bus.js,
            PAYMENTS_SEEN,
            PaymentSeen,
            SeenMarkers(lifecycle, bus.js).on_seen,
            concurrency=settings.findings_concurrency,
        )
        seen.start()
        stack.push_async_callback(seen.stop, settings.shutdown_timeout)
        scheduler = Scheduler(
            lifecycle,
            bus.js,
            interval=settings.reconcile_interval_seconds,
            expired_lookback=lookback,
            reconcile_batch=settings.reconcile_batch,
            refunder=refunder,
        )
        scheduler.start()
        stack.push_async_callback(scheduler.stop)

        async def working() -> bool:
            return findings.running and seen.running

        add_readiness_check(app, "findings", working)

        # Requests are handled side by side (nats-py runs one callback at a time): creations
        # waiting on the database are then committed together (group commit).
        in_flight = InFlight(settings.max_concurrency)
        stack.push_async_callback(in_flight.wait, settings.shutdown_timeout)
        service = await serve(
            bus.nc,
            "payments",
            "1.0.0",
            [
                Endpoint("create", PAYMENTS_CREATE, CreatePaymentInput, create_payment),
                Endpoint("get", PAYMENTS_GET, GetPaymentInput, get_payment),
                Endpoint("catalog", PAYMENTS_CATALOG, GetCatalogInput, get_catalog),
                Endpoint("match", PAYMENTS_MATCH, MatchPaymentsInput, match_payments),
                Endpoint(
                    "refund-request", PAYMENTS_REFUND_REQUEST, RequestRefundInput, refunder.request
                ),
                Endpoint("refund-get", PAYMENTS_REFUND_GET, GetRefundInput, get_refund),
            ],
            description="payments: create, status, catalogue",
            in_flight=in_flight,
        )
        stack.push_async_callback(service.stop)
        log.info(
            "payments ready",
            merchant=merchant,
            fee_payer=str(fee_payer.pubkey()) if fee_payer else None,
            environment=settings.environment,
        )

    app.cleanup_ctx.append(lifecycle(payments_service))
    return app


def main() -> None:
    run_service(PaymentsSettings, create_app)
