"""Webhooks in. A webhook is answered 2xx only after every item is stored durably in
JetStream; what happens next (verification, applying) runs from there, at its own pace."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict, ValidationError

from axiom_gateway.settings import settings_key
from axiom_shared.credentials import secret_matches
from axiom_shared.errors import ApiError, ErrorDetail, unavailable
from axiom_shared.http import json_response, read_json_value
from axiom_shared.logging import get_logger
from axiom_shared.metrics import WEBHOOK_ITEMS
from axiom_shared.nats import publish_event
from axiom_shared.openapi import BODY_ERRORS, errors, header_param
from axiom_shared.routes import Route
from axiom_shared.schemas import HeliusItemReceived
from axiom_shared.service import bus_key
from axiom_shared.settings import secret_value
from axiom_shared.topology import HELIUS_ITEM_SUBJECT

log = get_logger(__name__)


class RejectedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int
    problem: str


class WebhookReceipt(BaseModel):
    """What was done with a batch: every item stored, already stored, or refused."""

    model_config = ConfigDict(extra="forbid")
    received: int
    stored: int
    duplicates: int
    rejected: list[RejectedItem]


def helius_signature(item: Any) -> tuple[str, str]:
    """(signature, webhook type) of one item; raises ValueError naming what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("an item must be an object")
    if "signature" in item:  # enhanced: the signature is a top-level field
        signature, kind = item["signature"], "enhanced"
    else:  # raw: the RPC getTransaction shape
        try:
            signature, kind = item["transaction"]["signatures"][0], "raw"
        except (KeyError, IndexError, TypeError):
            raise ValueError("no signature (neither enhanced nor raw format)") from None
    if not isinstance(signature, str):
        raise ValueError("the signature must be a string")
    return signature, kind


async def helius_webhook(req: web.Request) -> web.Response:
    settings = req.app[settings_key]
    secrets = [
        s
        for s in (
            secret_value(settings.helius_webhook_secret),
            secret_value(settings.helius_webhook_secret_next),
        )
        if s
    ]
    if not secrets:
        WEBHOOK_ITEMS.labels(provider="helius", outcome="rejected").inc()
        raise ApiError(401, "unauthorized", "webhook authentication is not configured")
    if not secret_matches(req.headers.get("Authorization"), secrets):
        WEBHOOK_ITEMS.labels(provider="helius", outcome="rejected").inc()
        raise ApiError(401, "unauthorized", "missing or wrong Authorization")
    batch = await read_json_value(req, max_bytes=settings.webhook_max_bytes)
    if not isinstance(batch, list):
        raise ApiError(
            422,
            "validation_error",
            "a Helius webhook body is an array of items",
            [ErrorDetail(field="body", problem="expected an array")],
        )
    js = req.app[bus_key].js
    now = datetime.now(UTC)
    receipt = WebhookReceipt(received=len(batch), stored=0, duplicates=0, rejected=[])
    valid: list[tuple[str, HeliusItemReceived]] = []
    for index, item in enumerate(batch):
        # One bad item is refused on its own; the rest of the batch is still stored.
        try:
            signature, kind = helius_signature(item)
            message = HeliusItemReceived(
                signature=signature, webhook_type=kind, received_at=now, item=item
            )
        except (ValueError, ValidationError) as exc:
            problem = (
                str(exc)
                if isinstance(exc, ValueError) and not isinstance(exc, ValidationError)
                else "the signature is not a base58 transaction signature"
            )
            receipt.rejected.append(RejectedItem(index=index, problem=problem))
            WEBHOOK_ITEMS.labels(provider="helius", outcome="rejected").inc()
            continue
        valid.append((signature, message))
    # All of them sent at once, their acks awaited together (one round trip, not one each).
    acks = await asyncio.gather(
        *(
            publish_event(
                js,
                HELIUS_ITEM_SUBJECT.format(signature=signature),
                message,
                msg_id=f"helius:{signature}",
            )
            for signature, message in valid
        ),
        return_exceptions=True,
    )
    failed: BaseException | None = None
    for ack in acks:
        if isinstance(ack, BaseException):
            if not isinstance(ack, NatsError | TimeoutError | OSError):
                raise ack
            failed = failed or ack
            WEBHOOK_ITEMS.labels(provider="helius", outcome="failed").inc()
        elif ack.duplicate:
            receipt.duplicates += 1
            WEBHOOK_ITEMS.labels(provider="helius", outcome="duplicate").inc()
        else:
            receipt.stored += 1
            WEBHOOK_ITEMS.labels(provider="helius", outcome="stored").inc()
    if failed is not None:
        # Not all stored: answer 503 so Helius retries; what was stored is de-duplicated.
        log.warning("webhook items not stored", error=type(failed).__name__, stored=receipt.stored)
        raise unavailable("could not store the webhook, retry") from failed
    log.info(
        "helius webhook",
        received=receipt.received,
        stored=receipt.stored,
        duplicates=receipt.duplicates,
        rejected=len(receipt.rejected),
    )
    return json_response(receipt)


ROUTES = (
    Route(
        "POST",
        "/api/webhooks/helius",
        helius_webhook,
        "Helius webhook (enhanced or raw batch); stored durably before the answer",
        responses={200: WebhookReceipt, **errors(*BODY_ERRORS, 401, 503)},
        parameters=[header_param("Authorization", "the authHeader given to Helius", True)],
        tags=("webhooks",),
        feature="helius_ingest",
    ),
)
