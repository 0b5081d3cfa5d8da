"""Legacy Paymob card callbacks in: the transaction-processed callback (POST, JSON body) and the
transaction-response redirect (GET, the same values as flat query keys), both signed with
`?hmac=`. An authentic callback is stored durably in JetStream, then answered 200, even for an
order we never issued (the amadeus-proxy records and flags it), so that Paymob stops retrying.

Refusals, all in our error format and with nothing stored: no secret configured, or a missing
or wrong `hmac` → 401 (the HMAC is the caller's credential; wrong credentials are 401 here as
for Helius, not 403, which would say "authentic but not allowed"); a body that is not JSON →
400; not `application/json` → 415; larger than `PAYMOB_MAX_BYTES` → 413; a missing or
mistyped field → 422 naming it. Unknown fields are allowed: the payload is Paymob's, not ours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from axiom_gateway.paymob_hmac import PAYMOB_HMAC_FIELDS, SignedValue, hmac_matches
from axiom_gateway.settings import settings_key
from axiom_shared.errors import ApiError, unavailable, validation_error
from axiom_shared.http import json_response, read_json_value
from axiom_shared.logging import get_logger
from axiom_shared.metrics import WEBHOOK_ITEMS
from axiom_shared.nats import publish_event
from axiom_shared.openapi import BODY_ERRORS, errors
from axiom_shared.routes import Route
from axiom_shared.schemas.paymob import (
    PAYMOB_ID_PATTERN,
    PaymobTransactionReceived,
    paymob_transaction_state,
)
from axiom_shared.service import bus_key
from axiom_shared.settings import secret_value
from axiom_shared.topology import PAYMOB_TRANSACTION_SUBJECT

log = get_logger(__name__)

PAYMOB_PATH = "/api/webhooks/paymob"

# --- what a callback must carry (the signed fields; everything else passes through) --------

PaymobId = StrictInt | Annotated[StrictStr, Field(pattern=PAYMOB_ID_PATTERN)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class PaymobOrderRef(_Open):
    id: PaymobId


class PaymobSourceData(_Open):
    pan: StrictStr
    sub_type: StrictStr
    type: StrictStr


class PaymobTransaction(_Open):
    amount_cents: (
        Annotated[StrictInt, Field(ge=0)] | Annotated[StrictStr, Field(pattern=r"^\d{1,18}$")]
    )
    created_at: StrictStr
    currency: Annotated[StrictStr, Field(min_length=1, max_length=8)]
    error_occured: StrictBool
    has_parent_transaction: StrictBool
    id: PaymobId
    integration_id: StrictInt | StrictStr
    is_3d_secure: StrictBool
    is_auth: StrictBool
    is_capture: StrictBool
    is_refunded: StrictBool
    is_standalone_payment: StrictBool
    is_voided: StrictBool
    order: PaymobOrderRef
    owner: StrictInt | StrictStr
    pending: StrictBool
    source_data: PaymobSourceData
    success: StrictBool

    def signed_values(self) -> dict[str, SignedValue]:
        values: dict[str, SignedValue] = {
            name: getattr(self, name) for name in PAYMOB_HMAC_FIELDS if "." not in name
        }
        values["order.id"] = self.order.id
        values["source_data.pan"] = self.source_data.pan
        values["source_data.sub_type"] = self.source_data.sub_type
        values["source_data.type"] = self.source_data.type
        return values


class PaymobCallbackBody(_Open):
    """`{"type": "TRANSACTION", "obj": {...}}`. Paymob's other callback (`TOKEN`, a saved
    card) is signed over other fields and is not accepted here."""

    type: Literal["TRANSACTION"]
    obj: PaymobTransaction


_Flag = Literal["true", "false"]


class PaymobRedirectQuery(_Open):
    """The GET redirect: the signed values as text, exactly as they are signed."""

    amount_cents: Annotated[StrictStr, Field(pattern=r"^\d{1,18}$")]
    created_at: StrictStr
    currency: Annotated[StrictStr, Field(min_length=1, max_length=8)]
    error_occured: _Flag
    has_parent_transaction: _Flag
    id: Annotated[StrictStr, Field(pattern=PAYMOB_ID_PATTERN)]
    integration_id: StrictStr
    is_3d_secure: _Flag
    is_auth: _Flag
    is_capture: _Flag
    is_refunded: _Flag
    is_standalone_payment: _Flag
    is_voided: _Flag
    #: Sources disagree on the key: `order` or `order_id` (either is accepted, `order` first).
    order: Annotated[StrictStr, Field(pattern=PAYMOB_ID_PATTERN)]
    owner: StrictStr
    pending: _Flag
    source_data_pan: StrictStr = Field(alias="source_data.pan")
    source_data_sub_type: StrictStr = Field(alias="source_data.sub_type")
    source_data_type: StrictStr = Field(alias="source_data.type")
    success: _Flag

    def signed_values(self) -> dict[str, SignedValue]:
        values: dict[str, SignedValue] = {}
        for name in PAYMOB_HMAC_FIELDS:
            attr = "order" if name == "order.id" else name.replace(".", "_")
            values[name] = getattr(self, attr)
        return values


class PaymobReceipt(BaseModel):
    """An authentic callback, stored (or already stored: a redelivery)."""

    model_config = ConfigDict(extra="forbid")
    transaction_id: str
    order_id: str
    state: str
    duplicate: bool


# --- the handlers ------------------------------------------------------------------------


def _secrets(req: web.Request) -> list[str]:
    settings = req.app[settings_key]
    configured = (
        secret_value(settings.paymob_hmac_secret),
        secret_value(settings.paymob_hmac_secret_next),
    )
    secrets = [s for s in configured if s]
    if not secrets:
        _count("rejected")
        raise ApiError(401, "unauthorized", "Paymob callback authentication is not configured")
    return secrets


def _unauthorized() -> ApiError:
    _count("rejected")
    return ApiError(401, "unauthorized", "missing or wrong hmac")


def _count(outcome: str) -> None:
    WEBHOOK_ITEMS.labels(provider="paymob", outcome=outcome).inc()


async def paymob_callback(req: web.Request) -> web.Response:
    """POST: the transaction-processed callback."""
    secrets = _secrets(req)
    given = req.query.get("hmac")
    if not given:
        raise _unauthorized()
    settings = req.app[settings_key]
    body = await read_json_value(req, max_bytes=settings.paymob_max_bytes)
    try:
        callback = PaymobCallbackBody.model_validate(body)
    except PydanticValidationError as exc:
        _count("rejected")
        raise validation_error(exc) from None
    txn = callback.obj
    if not hmac_matches(given, txn.signed_values(), secrets):
        raise _unauthorized()
    message = PaymobTransactionReceived(
        transaction_id=str(txn.id),
        order_id=str(txn.order.id),
        state=paymob_transaction_state(
            success=txn.success,
            pending=txn.pending,
            is_refunded=txn.is_refunded,
            is_voided=txn.is_voided,
        ),
        success=txn.success,
        pending=txn.pending,
        is_refunded=txn.is_refunded,
        is_voided=txn.is_voided,
        amount_cents=int(txn.amount_cents),
        currency=txn.currency,
        via="callback",
        received_at=datetime.now(UTC),
        obj=body["obj"],
    )
    return await _store(req, message)


async def paymob_redirect(req: web.Request) -> web.Response:
    """GET: the transaction-response redirect, signed over the same fields."""
    secrets = _secrets(req)
    given = req.query.get("hmac")
    if not given:
        raise _unauthorized()
    flat = {k: v for k, v in req.query.items() if k != "hmac"}
    if "order" not in flat and "order_id" in flat:
        flat["order"] = flat["order_id"]
    try:
        query = PaymobRedirectQuery.model_validate(flat)
    except PydanticValidationError as exc:
        _count("rejected")
        raise validation_error(exc) from None
    if not hmac_matches(given, query.signed_values(), secrets):
        raise _unauthorized()
    success, pending = query.success == "true", query.pending == "true"
    is_refunded, is_voided = query.is_refunded == "true", query.is_voided == "true"
    message = PaymobTransactionReceived(
        transaction_id=query.id,
        order_id=query.order,
        state=paymob_transaction_state(
            success=success, pending=pending, is_refunded=is_refunded, is_voided=is_voided
        ),
        success=success,
        pending=pending,
        is_refunded=is_refunded,
        is_voided=is_voided,
        amount_cents=int(query.amount_cents),
        currency=query.currency,
        via="redirect",
        received_at=datetime.now(UTC),
        obj={k: v for k, v in req.query.items() if k != "hmac"},
    )
    return await _store(req, message)


async def _store(req: web.Request, message: PaymobTransactionReceived) -> web.Response:
    """Stored before the answer: a 2xx tells Paymob to stop retrying."""
    try:
        ack = await publish_event(
            req.app[bus_key].js,
            PAYMOB_TRANSACTION_SUBJECT.format(transaction_id=message.transaction_id),
            message,
            msg_id=message.message_id(),
        )
    except (NatsError, TimeoutError, OSError) as exc:
        # Not stored: 503 so that Paymob retries; what was stored is de-duplicated.
        _count("failed")
        log.warning("paymob callback not stored", error=type(exc).__name__)
        raise unavailable("could not store the callback, retry") from exc
    _count("duplicate" if ack.duplicate else "stored")
    log.info(
        "paymob callback",
        transaction_id=message.transaction_id,
        order_id=message.order_id,
        state=message.state.value,
        via=message.via,
        duplicate=bool(ack.duplicate),
    )
    receipt = PaymobReceipt(
        transaction_id=message.transaction_id,
        order_id=message.order_id,
        state=message.state.value,
        duplicate=bool(ack.duplicate),
    )
    return json_response(receipt)


_HMAC_PARAM: dict[str, Any] = {
    "name": "hmac",
    "in": "query",
    "required": True,
    "description": "Paymob's HMAC-SHA512 of the signed fields, lowercase hex",
    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"},
}

ROUTES = (
    Route(
        "POST",
        PAYMOB_PATH,
        paymob_callback,
        "Paymob transaction-processed callback; HMAC-verified, stored before the answer",
        body=PaymobCallbackBody,
        responses={200: PaymobReceipt, **errors(*BODY_ERRORS, 401, 503)},
        parameters=[_HMAC_PARAM],
        tags=("webhooks",),
        feature="paymob_ingest",
    ),
    Route(
        "GET",
        PAYMOB_PATH,
        paymob_redirect,
        "Paymob transaction-response redirect (the signed values as query keys)",
        responses={200: PaymobReceipt, **errors(401, 422, 503)},
        parameters=[_HMAC_PARAM],
        tags=("webhooks",),
        feature="paymob_ingest",
    ),
)
