"""The payments service, as its callers (gateway, notifier, verifier) reach it: typed calls
over NATS request/reply. Errors come back as the service raised them (`ApiError`: 404 for an
unknown payment, 503 when no replica answers in time).

A payment's current status is read from the status bucket first (`LatestStatus`): no call to
the payments service and no database read on the hottest path of the system (a checkout page
polling), with the payments service as the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AsyncExitStack

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import DEFAULT_SUB_PENDING_MSGS_LIMIT, Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_OP as KV_OPERATION_HEADER
from nats.js.kv import KeyValue
from pydantic import BaseModel

from axiom_shared.logging import get_logger
from axiom_shared.metrics import STATUS_FOLLOW_RESETS, STATUS_READS
from axiom_shared.nats import request, subscription_refused
from axiom_shared.schemas import PaymentStatusChanged, PaymentView
from axiom_shared.schemas import payments as msg
from axiom_shared.service import bus_key, lifecycle, settings_key
from axiom_shared.topology import (
    PAYMENT_STATUS_BUCKET,
    PAYMENT_STATUS_STREAM,
    PAYMENTS_CATALOG,
    PAYMENTS_CREATE,
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    PAYMENTS_REFUND_GET,
    PAYMENTS_REFUND_REQUEST,
)

log = get_logger(__name__)
STATUS_READS_FOLLOWED = STATUS_READS.labels(source="followed")
STATUS_READS_BUCKET = STATUS_READS.labels(source="bucket")
STATUS_READS_PAYMENTS = STATUS_READS.labels(source="payments")


class PaymentsClient:
    def __init__(self, nc: NATS, timeout: float) -> None:
        self._nc = nc
        self.timeout = timeout

    async def get(self, payment_id: str) -> msg.GetPaymentResult:
        """One payment by its public id (404 when there is none)."""
        return await request(
            self._nc,
            PAYMENTS_GET,
            msg.GetPaymentInput(payment_id=payment_id),
            msg.GetPaymentResult,
            timeout=self.timeout,
        )

    async def match(self, references: Sequence[str]) -> msg.MatchPaymentsResult:
        """The payments (any status) whose reference is one of `references`."""
        return await request(
            self._nc,
            PAYMENTS_MATCH,
            msg.MatchPaymentsInput(references=list(references)),
            msg.MatchPaymentsResult,
            timeout=self.timeout,
        )

    async def create(self, payment: msg.CreatePaymentInput) -> msg.CreatePaymentResult:
        return await request(
            self._nc, PAYMENTS_CREATE, payment, msg.CreatePaymentResult, timeout=self.timeout
        )

    async def request_refund(self, ask: msg.RequestRefundInput) -> msg.RefundResult:
        """A refund request of what a payment has due (4xx naming why there is none)."""
        return await request(
            self._nc, PAYMENTS_REFUND_REQUEST, ask, msg.RefundResult, timeout=self.timeout
        )

    async def refund(self, refund_id: str) -> msg.RefundResult:
        """One refund request (404 when there is none), with a fresh transaction to sign while
        it is open."""
        return await request(
            self._nc,
            PAYMENTS_REFUND_GET,
            msg.GetRefundInput(refund_id=refund_id),
            msg.RefundResult,
            timeout=self.timeout,
        )

    async def catalog(self) -> list[msg.CatalogItem]:
        result = await request(
            self._nc,
            PAYMENTS_CATALOG,
            msg.GetCatalogInput(),
            msg.GetCatalogResult,
            timeout=self.timeout,
        )
        return result.items


def payments_of(app: web.Application) -> PaymentsClient:
    """The payments client over `app`'s NATS connection (once the app has started)."""
    return PaymentsClient(app[bus_key].nc, app[settings_key].request_timeout)


#: After a write may have been missed, how long reads are not followed.
_SETTLE_SECONDS = 1.0


class _PaymentVersion(BaseModel):
    version: int


class _WrittenStatus(BaseModel):
    """The one field of a bucket write (a `PaymentStatusChanged`) read from every write."""

    payment: _PaymentVersion


def _answer_of(data: bytes) -> tuple[PaymentView, bytes]:
    """A bucket value (a `PaymentStatusChanged`) as check-status answers it: the view and its
    JSON (`model_dump_json(by_alias=True)`, as `json_response`)."""
    view = PaymentStatusChanged.from_bytes(data).payment
    return view, view.model_dump_json(by_alias=True).encode()


class _Followed:
    """A followed payment's newest status as the bucket's writes carry it, and the answer
    check-status gives for it (encoded once, when first asked)."""

    __slots__ = ("_answer", "version")

    def __init__(self) -> None:
        self.version = 0
        self._answer: tuple[PaymentView, bytes] | None = None

    def offer(self, data: bytes) -> None:
        """Keep `data` (a `PaymentStatusChanged`) when it is newer than what is kept."""
        answer = _answer_of(data)
        if answer[0].version > self.version:
            self.version = answer[0].version
            self._answer = answer

    def answer(self) -> tuple[PaymentView, bytes]:
        assert self._answer is not None, "answer() of a payment with no status yet"
        return self._answer


class LatestStatus:
    """A payment's latest status: the status bucket's copy, else the payments service's answer
    (404 when there is no such payment, 503 when it cannot be asked).

    Never older than a status event already seen: the payments service writes the bucket
    before it publishes the event (`axiom_payments.events.deliver`). A miss (a payment so new
    that its first status is still on its way, or one past the bucket's age) asks the payments
    service, whose database is the truth.

    Followed (`follow()`, the gateway on a single NATS server): the payments polled recently
    (the newest `capacity`) are answered from memory, kept current by a core subscription to
    the bucket's subject, after one PING/PONG with the server shared by the polls waiting
    (`_caught_up`). Why that is never older than an event:
    - the server hands a write to this connection while it handles the publish, before its
      stream stores and acknowledges it, hence before the payments service publishes the
      event; and a PONG comes after everything the server sent this connection before it;
    - a payment starts being followed from a bucket read, and only when that read is at least
      as new as every write received for it (a read can miss a write already received, which
      its stream has not stored yet: `_written`);
    - a write this connection may have missed (a reconnect, a message dropped by a slow
      consumer) forgets every followed payment, and for a moment none is followed again.
    In a NATS cluster a write can reach this server after the event reaches another: there
    every poll reads the bucket (`topology.ensure_topology` says from which replica)."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        payments: PaymentsClient,
        capacity: int = 20_000,
        written_capacity: int = 100_000,
        *,
        pending_limit: int = DEFAULT_SUB_PENDING_MSGS_LIMIT,
    ) -> None:
        self._nc = nc
        self._js = js
        self._payments = payments
        self._kv: KeyValue | None = None
        self._capacity = capacity
        self._pending_limit = pending_limit
        # Read path (no follow): the encoded view of the newest revision read, per payment.
        self._views: OrderedDict[str, tuple[int, PaymentView, bytes]] = OrderedDict()
        # Follow path.
        self._followed: OrderedDict[str, _Followed] = OrderedDict()
        # The newest version each payment's received writes carried (the newest
        # `written_capacity` payments written).
        self._written: OrderedDict[str, int] = OrderedDict()
        self._written_capacity = written_capacity
        self._follow_from = 0.0
        self._sub: Subscription | None = None
        self._prefix = f"$KV.{PAYMENT_STATUS_BUCKET}."
        self._applied = 0
        self._reconnects = 0
        self._round: asyncio.Future[None] | None = None
        self._wanted = asyncio.Event()
        self._pinger: asyncio.Task[None] | None = None

    async def follow(self) -> bool:
        """Follow the bucket's writes when NATS is one server (not a cluster) and allows this
        connection to; whether it does."""
        sub = await self._nc.subscribe(
            self._prefix + ">", cb=self._on_write, pending_msgs_limit=self._pending_limit
        )
        self._reconnects = self._nc.stats["reconnects"]
        # A request after the SUB: answered once the server took or refused the subscription.
        info = await self._js.stream_info(PAYMENT_STATUS_STREAM)
        reason = None
        if subscription_refused(self._nc, self._prefix + ">"):
            # NATS permissions older than this gateway (a deploy half done): still correct.
            reason = "not allowed to subscribe to the status bucket's writes"
        elif info.cluster is not None and info.cluster.name:
            reason = "the status bucket is on a NATS cluster"
        if reason is not None:
            log.warning("check-status reads the status bucket on every poll", reason=reason)
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
            return False
        self._sub = sub
        self._pinger = asyncio.create_task(self._pings(), name="status-follow-pings")
        return True

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        if self._round is not None:
            self._round.cancel()

    async def view(self, payment_id: str) -> PaymentView:
        return (await self.encoded(payment_id))[0]

    async def encoded(self, payment_id: str) -> tuple[PaymentView, bytes]:
        """The view and its JSON (`model_dump_json(by_alias=True)`, as `json_response`)."""
        if self._sub is not None and self._nc.is_connected:
            try:
                await self._caught_up()
            except (NatsError, TimeoutError) as exc:
                log.warning("status follow unsure, reading the bucket", error=repr(exc))
            else:
                return await self._followed_answer(payment_id)
        return await self._read(payment_id, None)

    async def _followed_answer(self, payment_id: str) -> tuple[PaymentView, bytes]:
        entry = self._followed.get(payment_id)
        if entry is not None and entry.version:
            self._followed.move_to_end(payment_id)
            STATUS_READS_FOLLOWED.inc()
            return entry.answer()
        if entry is None:
            if asyncio.get_running_loop().time() < self._follow_from:
                return await self._read(payment_id, None)
            # Followed from now: a write that arrives while the bucket is read is kept too.
            entry = self._followed[payment_id] = _Followed()
            while len(self._followed) > self._capacity:
                self._followed.popitem(last=False)
        try:
            return await self._read(payment_id, entry)
        finally:
            # Followed only from a copy at least as new as every write received for it: the
            # server hands a write out before its stream stores it, so a read made meanwhile
            # can be older than a write this process already let pass.
            if self._followed.get(payment_id) is entry and (
                not entry.version or entry.version < self._written.get(payment_id, 0)
            ):
                del self._followed[payment_id]

    async def _read(self, payment_id: str, entry: _Followed | None) -> tuple[PaymentView, bytes]:
        found = await self._from_bucket(payment_id)
        if found is not None:
            revision, data = found
            if entry is not None:
                entry.offer(data)  # the newer of the bucket's and a write received meanwhile
                STATUS_READS_BUCKET.inc()
                return entry.answer()
            return self._memo(payment_id, revision, data)
        STATUS_READS_PAYMENTS.inc()
        view = (await self._payments.get(payment_id)).payment
        return view, view.model_dump_json(by_alias=True).encode()

    async def _from_bucket(self, payment_id: str) -> tuple[int, bytes] | None:
        try:
            if self._kv is None:
                self._kv = await self._js.key_value(PAYMENT_STATUS_BUCKET)
            entry = await self._kv.get(payment_id)
        except KeyNotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            # The bucket cannot be read now: the payments service still can answer.
            log.warning("status bucket unreadable, asking the payments service", error=repr(exc))
            return None
        if not entry.value or entry.revision is None:
            return None
        return entry.revision, entry.value

    def _memo(self, payment_id: str, revision: int, data: bytes) -> tuple[PaymentView, bytes]:
        STATUS_READS_BUCKET.inc()
        cached = self._views.get(payment_id)
        if cached is not None and cached[0] == revision:
            self._views.move_to_end(payment_id)
            return cached[1], cached[2]
        view, body = _answer_of(data)
        self._views[payment_id] = (revision, view, body)
        self._views.move_to_end(payment_id)
        while len(self._views) > self._capacity:
            self._views.popitem(last=False)
        return view, body

    async def _on_write(self, msg: Msg) -> None:
        """A write to the bucket, as its writer published it (stored or refused: either way
        its data is a committed status of the payment, and only a newer version is kept)."""
        self._applied += 1
        payment_id = msg.subject[len(self._prefix) :]
        if msg.headers and msg.headers.get(KV_OPERATION_HEADER):  # a delete or purge
            self._followed.pop(payment_id, None)
            return
        try:
            version = _WrittenStatus.model_validate_json(msg.data).payment.version
            if version > self._written.get(payment_id, 0):
                self._written[payment_id] = version
            self._written.move_to_end(payment_id)
            while len(self._written) > self._written_capacity:
                self._written.popitem(last=False)
            entry = self._followed.get(payment_id)
            if entry is not None and version > entry.version:
                entry.offer(msg.data)
        except ValueError:
            # Not a status (only the payments service may write here): forget the payment,
            # its next poll reads the bucket.
            log.warning("unreadable status bucket write", subject=msg.subject[:200])
            self._followed.pop(payment_id, None)

    async def _caught_up(self) -> None:
        """Wait until every write the server sent this connection before now is applied.

        One PING at a time: the polls that arrive while one is out share the next."""
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
            self._wanted.set()
        await asyncio.shield(self._round)

    async def _pings(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            done, self._round = self._round, None
            if done is None:
                continue
            try:
                await self._nc.flush(timeout=math.ceil(self._payments.timeout))
                await self._apply_received()
                self._settle()
            except asyncio.CancelledError:
                done.cancel()
                raise
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

    async def _apply_received(self) -> None:
        """Wait until the messages read before now are applied: each waits in the
        subscription's queue for `_on_write`, which applies it without pausing. Done when as
        many were applied as were delivered, or the queue is empty (some were dropped)."""
        sub = self._sub
        if sub is None:
            return
        delivered = sub.delivered
        for _ in range(1_000):
            if self._applied >= delivered or not sub.pending_msgs:
                return
            await asyncio.sleep(0)  # one turn: the subscription's task empties its queue
        raise TimeoutError("status bucket writes arrive faster than they are applied")

    def _settle(self) -> None:
        """Forget every followed payment when a write may have been missed: one dropped (this
        process too slow: nats-py counts it delivered, `_on_write` never saw it) or made
        while this connection was away (a reconnect)."""
        sub = self._sub
        if sub is None:
            return
        if subscription_refused(self._nc, self._prefix + ">"):
            # Refused at a reconnect (the server's permissions changed): reading from now on.
            log.error("the status bucket subscription was refused: reading it on every poll")
            self._sub = None
            self._followed.clear()
            return
        reconnects = self._nc.stats["reconnects"]
        # Delivered = applied + waiting in the queue + dropped.
        dropped = sub.delivered - sub.pending_msgs - self._applied
        if not dropped and reconnects == self._reconnects:
            return
        log.warning(
            "status bucket writes may have been missed, following again",
            dropped=dropped,
            reconnected=reconnects != self._reconnects,
            forgotten=len(self._followed),
        )
        STATUS_FOLLOW_RESETS.inc()
        self._followed.clear()
        # A write missed is not in `_written`: for a moment, reads are not followed, which
        # leaves its stream the time to store it.
        self._follow_from = asyncio.get_running_loop().time() + _SETTLE_SECONDS
        self._applied += dropped
        self._reconnects = reconnects


latest_status_key = web.AppKey("latest_status", LatestStatus)


def install_latest_status(app: web.Application, *, follow: bool = False) -> None:
    """Give `app` a `LatestStatus` once its NATS connection is up (`app[latest_status_key]`);
    `follow`: one that follows the status bucket's writes (`LatestStatus.follow`)."""

    async def start(app: web.Application, stack: AsyncExitStack) -> None:
        bus = app[bus_key]
        latest = LatestStatus(bus.nc, bus.js, payments_of(app))
        stack.push_async_callback(latest.close)
        if follow:
            try:
                await latest.follow()
            except (NatsError, TimeoutError) as exc:
                log.warning(
                    "cannot follow the status bucket: reading it on every poll", error=repr(exc)
                )
        app[latest_status_key] = latest

    app.cleanup_ctx.append(lifecycle(start))
