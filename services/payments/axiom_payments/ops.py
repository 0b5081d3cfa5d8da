"""`axiom-ops`: the operator's CLI. It reads the same environment as the payments service
(TURSO_DB_URL, NATS_URL, ...) and every action it takes is itself written to the audit trail
(`operator_actions`; a status change also lands in `payment_events` with source `operator`).

    axiom-ops payments list [--status pending] [--limit 50]
    axiom-ops payments show PAYMENT_ID            # the payment, receipts, observations, audit
    axiom-ops payments reverify PAYMENT_ID [--signature SIG]
    axiom-ops payments expire PAYMENT_ID          # pending → expired, by hand
    axiom-ops payments cancel PAYMENT_ID          # pending|expired → failed: never fulfilled
    axiom-ops refunds [due] [--limit 100]         # money owed back, with payers and signatures
    axiom-ops refunds list [--status requested] [--limit 50]
    axiom-ops refunds request PAYMENT_ID [--amount BASE_UNITS] [--recipient PAYER]
                                         [--hot-wallet] [--reason TEXT]
    axiom-ops refunds show REFUND_ID              # the refund, its URL, a transaction to sign
    axiom-ops dlq list [--limit 50]
    axiom-ops dlq replay [--consumer NAME] [--limit 50]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from axiom_payments import ledger
from axiom_payments.app import payments_migrations
from axiom_payments.catalog import load_catalog
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.outbox import OutboxRelay
from axiom_payments.settings import PaymentsSettings
from axiom_shared.db import Database, open_database
from axiom_shared.errors import ApiError
from axiom_shared.logging import bind_correlation_id, configure_logging, current_correlation_id
from axiom_shared.migrations import migrate
from axiom_shared.nats import MSG_ID_HEADER, NatsUnavailable, connect_nats, publish_event
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import (
    ChangeSource,
    PaymentStatus,
    RefundStatus,
    RequestRefundInput,
    VerificationRequested,
)
from axiom_shared.service import load_settings
from axiom_shared.settings import secret_value
from axiom_shared.topology import DEAD_LETTERS, VERIFY_CANDIDATE_SUBJECT, ensure_topology
from axiom_shared.wire import DEAD_LETTER_REASON_HEADER, ORIGINAL_SUBJECT_HEADER


def out(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


#: The NATS user axiom-ops logs in as (unless NATS_USER says otherwise): allowed what payments
#: is, plus reading and replaying the dead letters (deploy/nats).
OPS_NATS_USER = "axiom-ops"


async def ops_nats(settings: PaymentsSettings) -> NATS:
    """Connect, or give up after REQUEST_TIMEOUT seconds (`NatsUnavailable`: one line)."""
    password = secret_value(settings.nats_password)
    return await connect_nats(
        settings.nats_url,
        "axiom-ops",
        connect_timeout=min(settings.nats_connect_timeout, settings.request_timeout),
        user=(settings.nats_user or OPS_NATS_USER) if password else None,
        password=password,
        tls_ca_file=settings.nats_tls_ca_file,
        give_up_after=settings.request_timeout,
    )


async def record(db: Database, action: str, target: str | None, details: dict[str, Any]) -> None:
    await ledger.operator_action(
        db, action, target, details, getpass.getuser(), current_correlation_id()
    )


async def run(args: argparse.Namespace, settings: PaymentsSettings) -> int:
    bind_correlation_id(None)
    db = await open_database(
        settings.turso_db_url,
        secret_value(settings.turso_db_auth_token),
        sync_url=settings.turso_sync_url,
    )
    try:
        await migrate(db, payments_migrations())
        if args.area == "payments":
            return await payments_command(args, settings, db)
        if args.area == "refunds":
            return await refunds_command(args, settings, db)
        return await dlq_command(args, settings, db)
    finally:
        await db.close()


async def payments_command(
    args: argparse.Namespace, settings: PaymentsSettings, db: Database
) -> int:
    if args.command == "list":
        where, params = ("status = ?", [args.status]) if args.status else ("1 = 1", [])
        ids = await ledger.public_ids(db, where, params, args.limit)
        rows = [await ledger.get_payment(db, pid) for pid in ids]
        out([r.view().model_dump(mode="json") for r in rows if r is not None])
        return 0
    row = await ledger.get_payment(db, args.payment_id)
    if row is None:
        sys.stderr.write(f"no payment {args.payment_id}\n")
        return 2
    if args.command == "show":
        out(
            {
                "payment": row.view().model_dump(mode="json"),
                "user_id": row.user_id,
                "scanned_at": row.scanned_at,
                "receipts": [
                    {**vars(r), "amount_lamports": str(r.amount_lamports)}
                    for r in await ledger.receipts_of(db, row.id)
                ],
                "observations": await ledger.observations_of(db, row.id),
                "audit_trail": await ledger.audit_trail(db, args.payment_id),
            }
        )
        await record(db, "payments.show", args.payment_id, {})
        return 0
    nc = await ops_nats(settings)
    try:
        js = nc.jetstream()
        await ensure_topology(nc, js, settings.nats_stream_replicas)
        if args.command == "reverify":
            await publish_event(
                js,
                VERIFY_CANDIDATE_SUBJECT.format(source="operator", payment_id=args.payment_id),
                VerificationRequested(
                    source=ChangeSource.OPERATOR,
                    payment_id=args.payment_id,
                    signature=args.signature,
                ),
            )
            await record(db, "payments.reverify", args.payment_id, {"signature": args.signature})
            out({"queued": True, "payment_id": args.payment_id})
            return 0
        relay = OutboxRelay(db, js)
        lifecycle = Lifecycle(
            db=db,
            relay=relay,
            catalog=load_catalog(settings.catalog_path),
            lookback=timedelta(seconds=settings.expired_lookback_seconds),
        )
        if args.command == "expire":
            changed = await lifecycle.expire(
                args.payment_id, ChangeSource.OPERATOR, "expired by an operator"
            )
            wanted = "pending"
        else:
            changed = await lifecycle.cancel(args.payment_id, "cancelled by an operator")
            wanted = "pending or expired"
        await record(
            db, f"payments.{args.command}", args.payment_id, {"changed": changed is not None}
        )
        await relay.flush()
        if changed is None:
            sys.stderr.write(f"{args.payment_id} is {row.status.value}, not {wanted}: unchanged\n")
            return 1
        out(changed.view().model_dump(mode="json"))
        return 0
    finally:
        await nc.close()


async def refunds_command(
    args: argparse.Namespace, settings: PaymentsSettings, db: Database
) -> int:
    command = args.command or "due"
    if command == "due":
        out(
            {
                "payments": await ledger.refunds_due(db, args.limit),
                # Transactions that named two of our payments paid neither: owed once each.
                "ambiguous_transactions": await ledger.ambiguous_credits(db, args.limit),
            }
        )
        await record(db, "refunds.due", None, {})
        return 0
    if command == "list":
        refunds = await ledger.list_refunds(db, args.status, args.limit)
        out([refund.view().model_dump(mode="json") for refund in refunds])
        return 0
    # Asking and showing go through the payments service: it alone writes payments and (in
    # hot-wallet mode) holds the refund key; this CLI never does.
    nc = await ops_nats(settings)
    try:
        client = PaymentsClient(nc, settings.request_timeout)
        if command == "request":
            ask = RequestRefundInput(
                payment_id=args.payment_id,
                amount=args.amount,
                hot_wallet=args.hot_wallet,
                recipient=args.recipient,
                requested_by=getpass.getuser(),
                reason=args.reason,
            )
            target = args.payment_id
            result = await client.request_refund(ask)
        else:
            target = args.refund_id
            result = await client.refund(args.refund_id)
    except ApiError as err:
        sys.stderr.write(err.body().model_dump_json() + "\n")
        return 1
    finally:
        await nc.close()
    await record(db, f"refunds.{command}", target, {"refund_id": result.refund.refund_id})
    shown: dict[str, Any] = result.model_dump(mode="json", exclude={"schema_"})
    if command == "show":
        shown["audit_trail"] = await ledger.audit_trail(db, result.refund.payment_id)
    out(shown)
    return 0


async def dlq_command(args: argparse.Namespace, settings: PaymentsSettings, db: Database) -> int:
    nc = await ops_nats(settings)
    try:
        js = nc.jetstream()
        await ensure_topology(nc, js, settings.nats_stream_replicas)
        info = await js.stream_info(DEAD_LETTERS.name)
        first, last = info.state.first_seq, info.state.last_seq
        letters: list[dict[str, Any]] = []
        seq = first
        while seq <= last and len(letters) < args.limit:
            try:
                msg = await js.get_msg(DEAD_LETTERS.name, seq)
            except NotFoundError:
                seq += 1
                continue
            headers = msg.headers or {}
            if not args.consumer or (msg.subject or "").endswith("." + args.consumer):
                letters.append(
                    {
                        "seq": seq,
                        "subject": msg.subject,
                        "original_subject": headers.get(ORIGINAL_SUBJECT_HEADER),
                        "reason": headers.get(DEAD_LETTER_REASON_HEADER),
                        "data": msg.data,
                        "headers": headers,
                    }
                )
            seq += 1
        if args.command == "list":
            out(
                [
                    {k: v for k, v in letter.items() if k not in ("data", "headers")}
                    | {"bytes": len(letter["data"] or b"")}
                    for letter in letters
                ]
            )
            return 0
        replayed = 0
        for letter in letters:
            original = letter["original_subject"]
            if not original:
                continue
            headers = {k: v for k, v in letter["headers"].items() if not k.startswith("Axiom-")}
            # A new msg id: the original one may still be in the duplicate window.
            headers[MSG_ID_HEADER] = f"replay:{DEAD_LETTERS.name}:{letter['seq']}"
            await js.publish(original, letter["data"] or b"", headers=headers)
            await js.delete_msg(DEAD_LETTERS.name, letter["seq"])
            await record(
                db,
                "dlq.replay",
                original,
                {"dead_letter_seq": letter["seq"], "reason": letter["reason"]},
            )
            replayed += 1
        out({"replayed": replayed})
        return 0
    finally:
        await nc.close()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="axiom-ops", description=__doc__.split("\n\n")[0])
    areas = top.add_subparsers(dest="area", required=True)
    payments = areas.add_parser("payments", help="list, show, re-verify, expire or cancel payments")
    commands = payments.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list")
    listing.add_argument("--status", choices=[s.value for s in PaymentStatus])
    listing.add_argument("--limit", type=int, default=50)
    for name in ("show", "expire", "cancel"):
        commands.add_parser(name).add_argument("payment_id")
    reverify = commands.add_parser("reverify")
    reverify.add_argument("payment_id")
    reverify.add_argument("--signature")
    refunds = areas.add_parser("refunds", help="money owed back, and refund requests")
    refunds.add_argument("--limit", type=int, default=100)
    refund_commands = refunds.add_subparsers(dest="command")
    refund_commands.add_parser("due", help="payments owing money back (the default)")
    listing = refund_commands.add_parser("list", help="refund requests, newest first")
    listing.add_argument("--status", choices=[s.value for s in RefundStatus])
    listing.add_argument("--limit", type=int, default=50)
    asking = refund_commands.add_parser("request", help="a refund request of what is due")
    asking.add_argument("payment_id")
    asking.add_argument(
        "--amount", type=int, help="base units of the payment's currency (default: all due)"
    )
    asking.add_argument(
        "--hot-wallet", action="store_true", help="signed and sent by the service (capped)"
    )
    asking.add_argument("--recipient", help="one of the payers (default: who paid the most)")
    asking.add_argument("--reason")
    refund_commands.add_parser("show", help="one refund request").add_argument("refund_id")
    dlq = areas.add_parser("dlq", help="dead letters: list or replay")
    dlq_commands = dlq.add_subparsers(dest="command", required=True)
    for name in ("list", "replay"):
        command = dlq_commands.add_parser(name)
        command.add_argument("--consumer", help="only this consumer's dead letters")
        command.add_argument("--limit", type=int, default=50)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings(PaymentsSettings)
    configure_logging("axiom-ops", "WARNING", json=True)
    try:
        return asyncio.run(run(args, settings))
    except NatsUnavailable as exc:
        sys.stderr.write(f"axiom-ops: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
