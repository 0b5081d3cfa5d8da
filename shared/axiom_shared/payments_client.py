"""The payments service, as its callers (gateway, notifier, verifier) reach it: typed calls
over NATS request/reply. Errors come back as the service raised them (`ApiError`: 404 for an
unknown payment, 503 when no replica answers in time).

A payment's current status is read from the status bucket first (`LatestStatus`): no call to
the payments service and no database read on the hottest path of the system (a checkout page
polling), with the payments service as the fallback."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AsyncExitStack

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from axiom_shared.logging import get_logger
from axiom_shared.nats import request
from axiom_shared.schemas import PaymentStatusChanged, PaymentView
from axiom_shared.schemas import payments as msg
from axiom_shared.service import bus_key, lifecycle, settings_key
from axiom_shared.topology import (
    PAYMENT_STATUS_BUCKET,
    PAYMENTS_CATALOG,
    PAYMENTS_CREATE,
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    PAYMENTS_REFUND_GET,
    PAYMENTS_REFUND_REQUEST,
)

log = get_logger(__name__)


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


class LatestStatus:
    """A payment's latest status: the status bucket's copy, else the payments service's answer
    (404 when there is no such payment, 503 when it cannot be asked).

    Never older than a status event already seen: the payments service writes the bucket
    before it publishes the event (`axiom_payments.events.deliver`), and the bucket is read
    through the stream's leader (it has no direct get, which could answer from a lagging
    replica). A miss (a payment so new that its first status is still on its way, or one past
    the bucket's age) asks the payments service, whose database is the truth.

    The encoded view of the newest revision read is kept per payment (the most recent
    `capacity` payments): a poll that finds nothing new costs one bucket read, no parsing."""

    def __init__(self, js: JetStreamContext, payments: PaymentsClient, capacity: int = 10_000):
        self._js = js
        self._payments = payments
        self._kv: KeyValue | None = None
        self._capacity = capacity
        self._views: OrderedDict[str, tuple[int, PaymentView, bytes]] = OrderedDict()

    async def view(self, payment_id: str) -> PaymentView:
        return (await self.encoded(payment_id))[0]

    async def encoded(self, payment_id: str) -> tuple[PaymentView, bytes]:
        """The view and its JSON (`model_dump_json(by_alias=True)`, as `json_response`)."""
        found = await self._from_bucket(payment_id)
        if found is not None:
            return found
        view = (await self._payments.get(payment_id)).payment
        return view, view.model_dump_json(by_alias=True).encode()

    async def _from_bucket(self, payment_id: str) -> tuple[PaymentView, bytes] | None:
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
        cached = self._views.get(payment_id)
        if cached is not None and cached[0] == entry.revision:
            self._views.move_to_end(payment_id)
            return cached[1], cached[2]
        view = PaymentStatusChanged.from_bytes(entry.value).payment
        body = view.model_dump_json(by_alias=True).encode()
        self._views[payment_id] = (entry.revision, view, body)
        self._views.move_to_end(payment_id)
        while len(self._views) > self._capacity:
            self._views.popitem(last=False)
        return view, body


latest_status_key = web.AppKey("latest_status", LatestStatus)


def install_latest_status(app: web.Application) -> None:
    """Give `app` a `LatestStatus` once its NATS connection is up (`app[latest_status_key]`)."""

    async def start(app: web.Application, _stack: AsyncExitStack) -> None:
        app[latest_status_key] = LatestStatus(app[bus_key].js, payments_of(app))

    app.cleanup_ctx.append(lifecycle(start))
