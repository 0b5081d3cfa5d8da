"""Live payment status for the browser, and the checkout page.

- `GET /api/sse/payment-status/{payment_id}`: the notifier's SSE stream, passed through chunk
  by chunk as it arrives (never buffered), with the client's `Last-Event-ID`. The notifier
  counts streams per client: the gateway names the client in `X-Axiom-Client` (the same
  identity the rate limiter uses). Notifier down → 503 JSON; its own errors (404, 429, 503)
  and its 204 ("you have the final status") are passed on as they are.
- `GET /api/pay/qr/{payment_id}?url=<solana: URL>`: the QR code (SVG) of one of the payment's
  Solana Pay URLs, made here so the page needs no script from elsewhere. Only a URL that pays
  *this* payment is drawn (a transfer URL with its recipient, reference and amount, as the
  payments service has them, or its own transaction request URL on our public origin): the
  gateway is not an open QR generator that could put someone else's wallet on our origin.
- `GET /`: the checkout page (static HTML, CSS and JS, no build step), under a strict CSP.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from importlib.resources import files

import aiohttp
import segno
from aiohttp import web

from axiom_gateway.client_identity import IdentityRules, client_identity
from axiom_gateway.payments_routes import public_base
from axiom_gateway.settings import GatewaySettings, settings_key
from axiom_shared.errors import ApiError, ErrorDetail, not_found, unavailable
from axiom_shared.logging import correlation_headers, get_logger
from axiom_shared.openapi import errors, path_param
from axiom_shared.payments_client import payments_of
from axiom_shared.routes import RateLimitClass, Route, static_files
from axiom_shared.schemas import PaymentView
from axiom_shared.solana_pay import (
    SolanaPayUrlError,
    TransferRequest,
    parse_transfer_url,
    transaction_request_url,
)
from axiom_shared.wire import (
    LAST_EVENT_ID_HEADER,
    PAYMENT_ID_PATTERN,
    STATUS_STREAM_PATH,
    STREAM_CLIENT_HEADER,
    is_payment_id,
    parse_last_event_id,
)

log = get_logger(__name__)

QR_PATH = "/api/pay/qr/{payment_id}"
MAX_QR_URL = 2048
#: The notifier sends a heartbeat about every 15 s: three missed means it is gone.
NOTIFIER_READ_TIMEOUT = 45.0

#: Everything the page loads comes from this origin; no inline script or style.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class StatusProxy:
    """The notifier client and the streams passed through right now (ended at shutdown)."""

    def __init__(self, notifier_url: str) -> None:
        self.notifier_url = notifier_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None
        self.open: set[aiohttp.ClientResponse] = set()

    def end_all(self) -> None:
        for upstream in list(self.open):
            upstream.close()


status_proxy_key = web.AppKey("status_proxy", StatusProxy)
page_key = web.AppKey("checkout_page", bytes)


async def stream_payment_status(req: web.Request) -> web.StreamResponse:
    payment_id = req.match_info["payment_id"]
    if not is_payment_id(payment_id):
        raise not_found("payment")
    proxy = req.app[status_proxy_key]
    assert proxy.session is not None
    settings = req.app[settings_key]
    headers = {
        "Accept": "text/event-stream",
        STREAM_CLIENT_HEADER: client_identity(req, IdentityRules.from_settings(settings)),
        **correlation_headers(),
    }
    last_id = parse_last_event_id(req.headers.get(LAST_EVENT_ID_HEADER))
    if last_id is not None:
        headers[LAST_EVENT_ID_HEADER] = str(last_id)
    url = proxy.notifier_url + STATUS_STREAM_PATH.format(payment_id=payment_id)
    try:
        upstream = await proxy.session.get(url, headers=headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("notifier unreachable", error=type(exc).__name__)
        raise unavailable("live status is unavailable; poll check-status instead") from None
    try:
        if upstream.status != 200 or upstream.content_type != "text/event-stream":
            return await _relay_answer(upstream)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(req)
        proxy.open.add(upstream)
        try:
            # Each chunk goes out as soon as it arrives: no buffering between the two streams.
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except ConnectionResetError:
            return response  # the browser left
        except (aiohttp.ClientError, TimeoutError):
            pass  # the notifier went away: end cleanly, the browser reconnects
        finally:
            proxy.open.discard(upstream)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response
    finally:
        upstream.close()


async def _relay_answer(upstream: aiohttp.ClientResponse) -> web.Response:
    """The notifier's non-stream answer, as it is: 204, or a JSON error."""
    if upstream.status == 204:
        return web.Response(status=204, headers={"Cache-Control": "no-cache"})
    try:
        body = await upstream.content.read(64 * 1024)
    except (aiohttp.ClientError, TimeoutError):
        raise unavailable("live status is unavailable; poll check-status instead") from None
    if upstream.status >= 400 and upstream.content_type == "application/json":
        headers = {}
        if "Retry-After" in upstream.headers:
            headers["Retry-After"] = upstream.headers["Retry-After"]
        return web.Response(
            body=body, status=upstream.status, content_type="application/json", headers=headers
        )
    log.warning("notifier answered unexpectedly", status=upstream.status)
    raise ApiError(502, "bad_gateway", "the live status service answered unexpectedly")


def transfer_url_pays(request: TransferRequest, payment: PaymentView) -> bool:
    """True when `request` is a Solana Pay transfer request paying exactly this payment (in
    its currency: `spl-token` is the payment's mint, or absent for SOL)."""
    if request.spl_token != payment.mint:
        return False
    try:
        units = request.units(payment.decimals)
    except SolanaPayUrlError:
        return False
    return (
        request.recipient == payment.recipient
        and payment.reference in request.references
        and units == payment.amount
    )


def qr_svg(data: str) -> bytes:
    qr = segno.make(data, error="m", micro=False)
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=4, border=4, xmldecl=False, svgns=True, title="Solana Pay")
    return out.getvalue()


async def payment_qr(req: web.Request) -> web.Response:
    payment_id = req.match_info["payment_id"]
    if not is_payment_id(payment_id):
        raise not_found("payment")
    url = req.query.get("url", "")
    if len(url) > MAX_QR_URL:
        raise _bad_qr_url(f"url is longer than {MAX_QR_URL} characters")
    transfer: TransferRequest | None = None
    if not url.startswith("solana:http"):
        try:
            # Read whole before anything else: a malformed amount is the caller's mistake.
            transfer = parse_transfer_url(url, MAX_QR_URL)
        except SolanaPayUrlError as exc:
            raise _bad_qr_url(f"url must be one of the payment's solana: URLs ({exc})") from None
    payment = (await payments_of(req.app).get(payment_id)).payment
    if transfer is not None:
        if not transfer_url_pays(transfer, payment):
            raise _bad_qr_url("url does not pay this payment")
    elif url != transaction_request_url(public_base(req), payment.order_id, payment.payment_id):
        # Only this payment's own transaction request, on our own public origin.
        raise _bad_qr_url("url is not this payment's transaction request")
    return web.Response(
        body=qr_svg(url),
        content_type="image/svg+xml",
        headers={"Cache-Control": "private, max-age=600", "X-Content-Type-Options": "nosniff"},
    )


def _bad_qr_url(problem: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "the request is not valid",
        [ErrorDetail(field="url", problem=problem)],
    )


async def checkout_page(req: web.Request) -> web.Response:
    return web.Response(
        body=req.app[page_key], content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def install_status(app: web.Application, settings: GatewaySettings) -> None:
    """What the status routes need: the notifier client and the checkout page."""
    proxy = StatusProxy(settings.notifier_url)
    app[status_proxy_key] = proxy
    app[page_key] = (files("axiom_gateway") / "static" / "index.html").read_bytes()

    async def notifier_client(app: web.Application) -> AsyncIterator[None]:
        proxy.session = aiohttp.ClientSession(
            # One connection per open stream: no pool limit (the notifier bounds streams).
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=settings.request_timeout, sock_read=NOTIFIER_READ_TIMEOUT
            ),
            auto_decompress=False,
        )
        yield
        proxy.end_all()
        await proxy.session.close()

    async def end_streams(_app: web.Application) -> None:
        # Before aiohttp waits for handlers: the browsers reconnect to another replica.
        proxy.end_all()

    app.cleanup_ctx.append(notifier_client)
    app.on_shutdown.append(end_streams)


_PAYMENT = path_param("payment_id", PAYMENT_ID_PATTERN, "the payment's public id")

ROUTES = (
    Route(
        "GET",
        STATUS_STREAM_PATH,
        stream_payment_status,
        "Live status (text/event-stream): `event: status`, `id:` the payment's version, "
        "`data:` the check-status JSON; first the current status, then each change; "
        "honours Last-Event-ID; ends after a final status (204 when the client has it)",
        responses={200: None, 204: None, **errors(404, 429, 503)},
        response_docs={
            200: {
                "description": "the status stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            204: {"description": "the client already has the final status: stop"},
        },
        parameters=[
            _PAYMENT,
            {
                "name": LAST_EVENT_ID_HEADER,
                "in": "header",
                "required": False,
                "description": "the last version received: only newer ones are sent",
                "schema": {"type": "string", "pattern": r"^[0-9]{1,18}$"},
            },
        ],
        tags=("payments",),
    ),
    Route(
        "GET",
        QR_PATH,
        payment_qr,
        "QR code (image/svg+xml) of this payment's Solana Pay transfer or transaction request URL",
        responses={200: None, **errors(404, 422, 503)},
        response_docs={
            200: {
                "description": "the QR code",
                "content": {"image/svg+xml": {"schema": {"type": "string"}}},
            }
        },
        parameters=[
            _PAYMENT,
            {
                "name": "url",
                "in": "query",
                "required": True,
                "description": "the transfer_url or transaction_request_url returned when the "
                "payment was created",
                "schema": {"type": "string", "maxLength": MAX_QR_URL},
            },
        ],
        tags=("payments",),
    ),
    Route("GET", "/", checkout_page, internal=True, rate_limit=RateLimitClass.NONE),
    static_files("/static/", str(files("axiom_gateway") / "static")),
)
