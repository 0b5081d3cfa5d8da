"""Payment routes: the catalogue, Solana Pay transaction requests, and payment status.

The gateway owns no payment data: it validates, then asks the payments service over NATS
request/reply (with a timeout; an unanswered request is a 503, never a 500).
"""

from __future__ import annotations

from urllib.parse import urljoin

from aiohttp import web
from nats.errors import Error as NatsError

from axiom_gateway.api_models import (
    CatalogEntry,
    PayRequestBody,
    TransactionRequestInfo,
    VerifyRequestBody,
)
from axiom_gateway.client_identity import IdentityRules, authenticated_user, client_identity
from axiom_gateway.ratelimit import limit_by_key
from axiom_gateway.settings import settings_key
from axiom_shared.errors import ApiError, ErrorDetail, not_found, unavailable
from axiom_shared.http import json_response, read_json
from axiom_shared.nats import publish_event
from axiom_shared.openapi import BODY_ERRORS, errors, header_param, path_param
from axiom_shared.payments_client import latest_status_key, payments_of
from axiom_shared.routes import RateLimitClass, Route
from axiom_shared.schemas import (
    SOL_DECIMALS,
    CatalogItem,
    ChangeSource,
    CreatePaymentInput,
    PaymentCreated,
    PaymentView,
    VerificationRequested,
)
from axiom_shared.service import bus_key
from axiom_shared.solana_pay import transaction_request_url
from axiom_shared.topology import VERIFY_CANDIDATE_SUBJECT
from axiom_shared.wire import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    ORDER_ID_PATTERN,
    PAYMENT_ID_PATTERN,
    TRANSACTION_REQUEST_PATH,
    TRANSACTION_REQUEST_PAYMENT_PARAM,
    is_order_id,
    is_payment_id,
)

_MAX_KEY = 255


async def _catalog_item(req: web.Request) -> CatalogItem:
    order_id = req.match_info["order_id"]
    if is_order_id(order_id):
        for item in await payments_of(req.app).catalog():
            if item.order_id == order_id:
                return item
    raise _order_not_found(order_id)


def _order_not_found(order_id: str) -> ApiError:
    # Named only when it is a well-formed id: a caller's arbitrary text is never echoed back.
    return not_found(f"order {order_id!r}" if is_order_id(order_id) else "order")


async def get_catalog(req: web.Request) -> web.Response:
    items = [
        CatalogEntry(
            order_id=i.order_id,
            label=i.label,
            amount_lamports=i.amount_lamports,
            currency=i.currency,
            amount=i.amount,
            decimals=SOL_DECIMALS if i.decimals is None else i.decimals,
            mint=i.mint,
        )
        for i in await payments_of(req.app).catalog()
    ]
    return json_response([i.model_dump(mode="json") for i in items])


async def get_transaction_request(req: web.Request) -> web.Response:
    item = await _catalog_item(req)
    icon = urljoin(public_base(req), item.icon)
    return json_response(TransactionRequestInfo(label=item.label, icon=icon))


async def post_transaction_request(req: web.Request) -> web.Response:
    order_id = req.match_info["order_id"]
    body = await read_json(req, PayRequestBody)
    if not is_order_id(order_id):
        raise _order_not_found(order_id)
    # `?payment=`: the transaction request URL of an existing payment (its QR code): the
    # wallet gets the transaction for that payment; nothing new is created.
    payment_id = req.query.get(TRANSACTION_REQUEST_PAYMENT_PARAM)
    if payment_id is not None and not is_payment_id(payment_id):
        raise not_found("payment")
    settings = req.app[settings_key]
    rules = IdentityRules.from_settings(settings)
    if body.account is not None:
        # The merchant's key co-signs each transaction request: one payer account gets only
        # so many, whoever asks for them.
        await limit_by_key(
            req,
            settings.account_rate_limit,
            f"account:{body.account}",
            "transaction requests for this account",
        )
    created = await payments_of(req.app).create(
        CreatePaymentInput(
            order_id=order_id,
            # The authenticated user when a trusted layer in front says who it is.
            user_id=authenticated_user(req, rules) or body.user_id or "anonymous",
            account=body.account,
            idempotency_key=idempotency_key(req),
            # A key belongs to whoever sent it, never to a value in the body.
            idempotency_scope=client_identity(req, rules),
            payment_id=payment_id,
        )
    )
    headers = {IDEMPOTENT_REPLAYED_HEADER: "true"} if created.replayed else None
    answer = created.created()
    request_url = transaction_request_url(public_base(req), order_id, answer.payment_id)
    answer = answer.model_copy(update={"transaction_request_url": request_url})
    return json_response(answer, headers=headers)


async def get_status(req: web.Request) -> web.Response:
    payment_id = req.match_info["payment_id"]
    if not is_payment_id(payment_id):
        raise not_found("payment")
    # The status bucket's copy, never older than a status event already sent (no database
    # read on the hottest path: checkout pages that cannot use SSE poll this every second).
    _view, body = await req.app[latest_status_key].encoded(payment_id)
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def post_verify(req: web.Request) -> web.Response:
    """A manual nudge: look at the chain for this payment now. The answer is the current
    status; the verification runs after it (202) and shows in check-status and the SSE."""
    body = await read_json(req, VerifyRequestBody)
    result = await payments_of(req.app).get(body.payment_id)
    try:
        await publish_event(
            req.app[bus_key].js,
            VERIFY_CANDIDATE_SUBJECT.format(source="manual", payment_id=body.payment_id),
            VerificationRequested(
                source=ChangeSource.MANUAL, payment_id=body.payment_id, signature=body.signature
            ),
        )
    except (NatsError, TimeoutError, OSError) as exc:
        raise unavailable("could not queue the verification, retry") from exc
    return json_response(result.payment, status=202, headers={"Cache-Control": "no-store"})


def idempotency_key(req: web.Request) -> str | None:
    """The Idempotency-Key header, quoted or bare, 1 to 255 characters."""
    raw = req.headers.get(IDEMPOTENCY_KEY_HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= _MAX_KEY or not key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{IDEMPOTENCY_KEY_HEADER} must be 1 to {_MAX_KEY} printable characters",
            [ErrorDetail(field=IDEMPOTENCY_KEY_HEADER, problem="invalid length or characters")],
        )
    return key


def public_base(req: web.Request) -> str:
    settings = req.app[settings_key]
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + "/"
    return f"{req.scheme}://{req.host}/"


_ORDER = path_param("order_id", ORDER_ID_PATTERN, "an order_id from the catalogue")
_PAYMENT = path_param("payment_id", PAYMENT_ID_PATTERN, "the payment's public id")

ROUTES = (
    Route(
        "GET",
        "/api/catalog",
        get_catalog,
        "What can be bought",
        responses={200: CatalogEntry, **errors(503)},
        array_response=True,
        tags=("payments",),
    ),
    Route(
        "GET",
        TRANSACTION_REQUEST_PATH,
        get_transaction_request,
        "Solana Pay transaction request: label and icon",
        responses={200: TransactionRequestInfo, **errors(404, 503)},
        parameters=[_ORDER],
        tags=("payments",),
    ),
    Route(
        "POST",
        TRANSACTION_REQUEST_PATH,
        post_transaction_request,
        "Create a pending payment; with `account`, the transaction for the wallet to sign. "
        "With `?payment=<payment_id>` (the payment's transaction request URL): that pending "
        "payment's transaction, nothing created (409 once it is no longer payable)",
        body=PayRequestBody,
        responses={200: PaymentCreated, **errors(*BODY_ERRORS, 404, 409, 429, 503)},
        parameters=[
            _ORDER,
            {
                "name": TRANSACTION_REQUEST_PAYMENT_PARAM,
                "in": "query",
                "required": False,
                "description": "an existing pending payment of this order",
                "schema": {"type": "string", "pattern": PAYMENT_ID_PATTERN},
            },
            header_param(IDEMPOTENCY_KEY_HEADER, "makes a retry safe"),
        ],
        tags=("payments",),
        feature="solana_payments",
        rate_limit=RateLimitClass.PAYMENT,
    ),
    Route(
        "POST",
        "/api/pay/verify",
        post_verify,
        "Look at the chain for a payment now (optionally at one signature)",
        body=VerifyRequestBody,
        responses={202: PaymentView, **errors(*BODY_ERRORS, 404, 429, 503)},
        tags=("payments",),
        feature="solana_payments",
        rate_limit=RateLimitClass.PAYMENT,
    ),
    Route(
        "GET",
        "/api/pay/check-status/{payment_id}",
        get_status,
        "A payment's current status",
        responses={200: PaymentView, **errors(404, 503)},
        parameters=[_PAYMENT],
        tags=("payments",),
    ),
)
