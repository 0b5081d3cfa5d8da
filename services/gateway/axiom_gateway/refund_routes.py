"""Refund requests, for the merchant's own wallet: the refund as a Solana Pay transaction
request (`solana:<this URL>`: the wallet GETs the label, POSTs its `account`, gets the
transaction to sign) and the QR of its transfer URL.

Only the refund's sender (the merchant wallet) is given the transaction: it moves the
merchant's money to the account that paid, and nothing here can sign it. A refund id is
random and unguessable; operators get it from `axiom-ops refunds request|show`.
"""

from __future__ import annotations

from urllib.parse import urljoin

from aiohttp import web

from axiom_gateway.api_models import PayRequestBody, RefundTransaction, TransactionRequestInfo
from axiom_gateway.settings import settings_key
from axiom_gateway.status_routes import qr_svg
from axiom_shared.errors import ApiError, ErrorDetail, not_found
from axiom_shared.http import json_response, read_json
from axiom_shared.openapi import BODY_ERRORS, errors, path_param
from axiom_shared.payments_client import payments_of
from axiom_shared.routes import RateLimitClass, Route
from axiom_shared.schemas import RefundResult, RefundStatus
from axiom_shared.wire import REFUND_ID_PATTERN, is_refund_id

REFUND_REQUEST_PATH = "/api/refunds/req/{refund_id}"
REFUND_QR_PATH = "/api/refunds/qr/{refund_id}"


async def _refund(req: web.Request) -> RefundResult:
    refund_id = req.match_info["refund_id"]
    if not is_refund_id(refund_id):
        raise not_found("refund")
    return await payments_of(req.app).refund(refund_id)


async def get_refund_request(req: web.Request) -> web.Response:
    refund = (await _refund(req)).refund
    settings = req.app[settings_key]
    base = settings.public_base_url or f"{req.scheme}://{req.host}/"
    return json_response(
        TransactionRequestInfo(
            label=f"Refund of payment {refund.payment_id}",
            icon=urljoin(base.rstrip("/") + "/", "static/axiomid.svg"),
        )
    )


async def post_refund_request(req: web.Request) -> web.Response:
    body = await read_json(req, PayRequestBody)
    result = await _refund(req)
    refund = result.refund
    if refund.status is not RefundStatus.REQUESTED or result.transaction is None:
        raise ApiError(
            409,
            "refund_closed",
            f"this refund is {refund.status.value} ({refund.mode.value}): nothing to sign",
            [ErrorDetail(field="refund_id", problem=refund.status.value)],
        )
    if body.account != refund.sender:
        raise ApiError(
            422,
            "account_not_allowed",
            "only the merchant wallet this refund is paid from can sign it",
            [ErrorDetail(field="account", problem="not the refund's sender")],
        )
    return json_response(
        RefundTransaction(
            transaction=result.transaction,
            message=f"Refund {refund.refund_id} of payment {refund.payment_id}",
        )
    )


async def refund_qr(req: web.Request) -> web.Response:
    refund = (await _refund(req)).refund
    return web.Response(
        body=qr_svg(refund.transfer_url),
        content_type="image/svg+xml",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )


_REFUND = path_param("refund_id", REFUND_ID_PATTERN, "the refund request's id (axiom-ops)")

ROUTES = (
    Route(
        "GET",
        REFUND_REQUEST_PATH,
        get_refund_request,
        "A refund request as a Solana Pay transaction request: label and icon",
        responses={200: TransactionRequestInfo, **errors(404, 503)},
        parameters=[_REFUND],
        tags=("refunds",),
    ),
    Route(
        "POST",
        REFUND_REQUEST_PATH,
        post_refund_request,
        "The refund's transaction, for the merchant wallet it is paid from to sign",
        body=PayRequestBody,
        responses={200: RefundTransaction, **errors(*BODY_ERRORS, 404, 409, 429, 503)},
        parameters=[_REFUND],
        tags=("refunds",),
        feature="solana_payments",
        rate_limit=RateLimitClass.PAYMENT,
    ),
    Route(
        "GET",
        REFUND_QR_PATH,
        refund_qr,
        "QR code (image/svg+xml) of the refund request's Solana Pay transfer URL",
        responses={200: None, **errors(404, 503)},
        response_docs={
            200: {
                "description": "the QR code",
                "content": {"image/svg+xml": {"schema": {"type": "string"}}},
            }
        },
        parameters=[_REFUND],
        tags=("refunds",),
    ),
)
