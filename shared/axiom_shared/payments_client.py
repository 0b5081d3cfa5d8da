"""The payments service, as its callers (gateway, notifier, verifier) reach it: typed calls
over NATS request/reply. Errors come back as the service raised them (`ApiError`: 404 for an
unknown payment, 503 when no replica answers in time)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from nats.aio.client import Client as NATS

from axiom_shared.nats import request
from axiom_shared.schemas import payments as msg
from axiom_shared.service import bus_key, settings_key
from axiom_shared.topology import (
    PAYMENTS_CATALOG,
    PAYMENTS_CREATE,
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    PAYMENTS_REFUND_GET,
    PAYMENTS_REFUND_REQUEST,
)


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
