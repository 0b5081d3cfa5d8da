"""Payment routes: the catalogue, Solana Pay transaction requests, and payment status.

The gateway owns no payment data: it validates, then asks the payments service over NATS
request/reply (with a timeout; an unanswered request is a 503, never a 500).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

from aiohttp import web
from nats.errors import Error as NatsError

from axiom_gateway.api_models import (
    CatalogEntry,
    PaymentCreated,
    PayRequestBody,
    TransactionRequestInfo,
    VerifyRequestBody,
)
from axiom_gateway.client_identity import IdentityRules, authenticated_user, client_identity
from axiom_gateway.openapi import Operation, header_param, path_param
from axiom_gateway.ratelimit import limit_by_key
from axiom_gateway.settings import GatewaySettings
from axiom_shared.errors import ApiError, ErrorBody, ErrorDetail, not_found, unavailable
from axiom_shared.http import json_response, read_json
from axiom_shared.nats import publish_event, request
from axiom_shared.schemas import (
    CatalogItem,
    ChangeSource,
    CreatePaymentInput,
    CreatePaymentResult,
    GetCatalogInput,
    GetCatalogResult,
    GetPaymentInput,
    GetPaymentResult,
    PaymentView,
    VerificationRequested,
)
from axiom_shared.schemas.payments import ORDER_ID_PATTERN
from axiom_shared.service import bus_key, settings_key
from axiom_shared.topology import (
    PAYMENTS_CATALOG,
    PAYMENTS_CREATE,
    PAYMENTS_GET,
    VERIFY_CANDIDATE_SUBJECT,
)

PAYMENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ORDER_RE = re.compile(ORDER_ID_PATTERN)
_PAYMENT_RE = re.compile(PAYMENT_ID_PATTERN)
_MAX_KEY = 255


def _timeout(request_: web.Request) -> float:
    return request_.app[settings_key].request_timeout


async def _catalog(req: web.Request) -> list[CatalogItem]:
    result = await request(
        req.app[bus_key].nc,
        PAYMENTS_CATALOG,
        GetCatalogInput(),
        GetCatalogResult,
        timeout=_timeout(req),
    )
    return result.items


async def _catalog_item(req: web.Request) -> CatalogItem:
    order_id = req.match_info["order_id"]
    if _ORDER_RE.match(order_id):
        for item in await _catalog(req):
            if item.order_id == order_id:
                return item
    raise _order_not_found(order_id)


def _order_not_found(order_id: str) -> ApiError:
    # Named only when it is a well-formed id: a caller's arbitrary text is never echoed back.
    return not_found(f"order {order_id!r}" if _ORDER_RE.match(order_id) else "order")


async def get_catalog(req: web.Request) -> web.Response:
    items = [
        CatalogEntry(order_id=i.order_id, label=i.label, amount_lamports=i.amount_lamports)
        for i in await _catalog(req)
    ]
    return json_response([i.model_dump(mode="json") for i in items])


async def get_transaction_request(req: web.Request) -> web.Response:
    item = await _catalog_item(req)
    icon = urljoin(_public_base(req), item.icon)
    return json_response(TransactionRequestInfo(label=item.label, icon=icon))


async def post_transaction_request(req: web.Request) -> web.Response:
    order_id = req.match_info["order_id"]
    body = await read_json(req, PayRequestBody)
    if not _ORDER_RE.match(order_id):
        raise _order_not_found(order_id)
    settings = _gateway_settings(req)
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
    created = await request(
        req.app[bus_key].nc,
        PAYMENTS_CREATE,
        CreatePaymentInput(
            order_id=order_id,
            # The authenticated user when a trusted layer in front says who it is.
            user_id=authenticated_user(req, rules) or body.user_id or "anonymous",
            account=body.account,
            idempotency_key=idempotency_key(req),
            # A key belongs to whoever sent it, never to a value in the body.
            idempotency_scope=client_identity(req, rules),
        ),
        CreatePaymentResult,
        timeout=_timeout(req),
    )
    answer = PaymentCreated.model_validate(
        created.model_dump(exclude={"schema_", "replayed"}), from_attributes=False
    )
    headers = {"Idempotent-Replayed": "true"} if created.replayed else None
    return json_response(answer, headers=headers)


async def get_status(req: web.Request) -> web.Response:
    payment_id = req.match_info["payment_id"]
    if not _PAYMENT_RE.match(payment_id):
        raise not_found("payment")
    result = await request(
        req.app[bus_key].nc,
        PAYMENTS_GET,
        GetPaymentInput(payment_id=payment_id),
        GetPaymentResult,
        timeout=_timeout(req),
    )
    return json_response(result.payment, headers={"Cache-Control": "no-store"})


async def post_verify(req: web.Request) -> web.Response:
    """A manual nudge: look at the chain for this payment now. The answer is the current
    status; the verification runs after it (202) and shows in check-status and the SSE."""
    body = await read_json(req, VerifyRequestBody)
    result = await request(
        req.app[bus_key].nc,
        PAYMENTS_GET,
        GetPaymentInput(payment_id=body.payment_id),
        GetPaymentResult,
        timeout=_timeout(req),
    )
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
    raw = req.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= _MAX_KEY or not key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {_MAX_KEY} printable characters",
            [ErrorDetail(field="Idempotency-Key", problem="invalid length or characters")],
        )
    return key


def _gateway_settings(req: web.Request) -> GatewaySettings:
    settings = req.app[settings_key]
    assert isinstance(settings, GatewaySettings)
    return settings


def _public_base(req: web.Request) -> str:
    settings = _gateway_settings(req)
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + "/"
    return f"{req.scheme}://{req.host}/"


def add_payment_routes(app: web.Application) -> list[Operation]:
    app.router.add_get("/api/catalog", get_catalog)
    app.router.add_get("/api/pay/req/{order_id}", get_transaction_request)
    app.router.add_post("/api/pay/req/{order_id}", post_transaction_request)
    app.router.add_get("/api/pay/check-status/{payment_id}", get_status)
    app.router.add_post("/api/pay/verify", post_verify)
    order = path_param("order_id", ORDER_ID_PATTERN, "an order_id from the catalogue")
    payment = path_param("payment_id", PAYMENT_ID_PATTERN, "the payment's public id")
    unavailable = {503: ErrorBody}
    return [
        Operation(
            "get",
            "/api/catalog",
            "What can be bought",
            {200: CatalogEntry, **unavailable},
            array_response=True,
            tags=("payments",),
        ),
        Operation(
            "get",
            "/api/pay/req/{order_id}",
            "Solana Pay transaction request: label and icon",
            {200: TransactionRequestInfo, 404: ErrorBody, **unavailable},
            parameters=[order],
            tags=("payments",),
        ),
        Operation(
            "post",
            "/api/pay/req/{order_id}",
            "Create a pending payment; with `account`, the transaction for the wallet to sign",
            {
                200: PaymentCreated,
                400: ErrorBody,
                404: ErrorBody,
                413: ErrorBody,
                415: ErrorBody,
                422: ErrorBody,
                429: ErrorBody,
                **unavailable,
            },
            body=PayRequestBody,
            parameters=[order, header_param("Idempotency-Key", "makes a retry safe")],
            tags=("payments",),
        ),
        Operation(
            "post",
            "/api/pay/verify",
            "Look at the chain for a payment now (optionally at one signature)",
            {
                202: PaymentView,
                400: ErrorBody,
                404: ErrorBody,
                413: ErrorBody,
                415: ErrorBody,
                422: ErrorBody,
                429: ErrorBody,
                **unavailable,
            },
            body=VerifyRequestBody,
            tags=("payments",),
        ),
        Operation(
            "get",
            "/api/pay/check-status/{payment_id}",
            "A payment's current status",
            {200: PaymentView, 404: ErrorBody, **unavailable},
            parameters=[payment],
            tags=("payments",),
        ),
    ]
