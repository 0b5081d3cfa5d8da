"""What an attacker learns or gains from the outside.

- Secrets: with a known value in every secret setting of every service, a full payment (paid,
  verified, provisioned), webhooks with wrong and right credentials, a Paymob callback and an
  Amadeus search and booking leave none of them in any log line (rendered as in production:
  JSON, redaction on), in any answer's body or headers, or in /metrics.
- The rate limit is per peer: spoofed X-Forwarded-For, Forwarded, X-Real-IP and X-User-Id from
  an untrusted peer, or a wrong admin token, buy no extra requests.
- A guessed payment id tells nothing: check-status and the SSE stream answer every unknown or
  malformed id with the same 404 body.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import structlog
from solders.keypair import Keypair
from structlog.contextvars import unbind_contextvars

from axiom_gateway.paymob_hmac import paymob_hmac
from axiom_shared.logging import configure_logging
from axiom_shared.schemas import utcnow
from sandbox.solana.wallet import pay_url
from tests.fixtures.system import ORDER
from tests.security.conftest import FullStackFactory

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def production_logs() -> Iterator[io.StringIO]:
    """Every log line of this process, rendered as the services render them (JSON, with the
    redaction processor, DEBUG and up), into a buffer; the test's logging is put back after."""
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        configure_logging("security-test", "DEBUG", json=True)
    try:
        yield buffer
    finally:
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        unbind_contextvars("service")


def paymob_callback(transaction_id: int) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "amount_cents": 10000,
        "created_at": "2025-01-01T10:00:00",
        "currency": "EGP",
        "error_occured": False,
        "has_parent_transaction": False,
        "id": transaction_id,
        "integration_id": 1,
        "is_3d_secure": True,
        "is_auth": False,
        "is_capture": False,
        "is_refunded": False,
        "is_standalone_payment": True,
        "is_voided": False,
        "order": {"id": 4242},
        "owner": 7,
        "pending": False,
        "source_data": {"pan": "2346", "sub_type": "MasterCard", "type": "card"},
        "success": True,
    }
    return {"type": "TRANSACTION", "obj": obj}


def signed(obj: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in obj.items() if k not in ("order", "source_data")}
    values["order.id"] = obj["order"]["id"]
    for key in ("pan", "sub_type", "type"):
        values[f"source_data.{key}"] = obj["source_data"][key]
    return values


@pytest.mark.timeout(180)
async def test_no_secret_reaches_logs_answers_or_metrics(
    full_stack_factory: FullStackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    fee_payer = Keypair()
    known = {
        "turso_db_auth_token": f"turso-{secrets.token_hex(12)}",
        "solana_private_key": str(fee_payer),
        "bookings_db_auth_token": f"bookings-{secrets.token_hex(12)}",
        "admin_token": f"admin-{secrets.token_hex(12)}",
        "helius_webhook_secret_next": f"helius-next-{secrets.token_hex(12)}",
        "paymob_hmac_secret_next": f"paymob-next-{secrets.token_hex(12)}",
    }
    answers: list[bytes] = []
    with production_logs() as logs:
        stack = await full_stack_factory(
            limit=1000,
            window=10,
            payments={
                "turso_db_auth_token": known["turso_db_auth_token"],
                "solana_private_key": known["solana_private_key"],
            },
            proxy={"bookings_db_auth_token": known["bookings_db_auth_token"]},
            admin_token=known["admin_token"],
            helius_webhook_secret_next=known["helius_webhook_secret_next"],
            paymob_hmac_secret_next=known["paymob_hmac_secret_next"],
        )
        known |= {
            "helius_webhook_secret": stack.helius_secret,
            "paymob_hmac_secret": stack.paymob_secret,
            "amadeus_client_secret": stack.amadeus.client_secret,
            "system_helius_secret": stack.system.webhook_secret,
        }

        async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
            status, headers, raw = await stack.call(method, path, **kwargs)
            answers.append(json.dumps(headers).encode() + raw)
            return status, json.loads(raw) if raw else None

        status, created = await call("POST", f"/api/pay/req/{ORDER}", json={})
        assert status == 200, created
        await pay_url(created["transfer_url"], stack.system.solana.rpc_url)
        view = await stack.system.wait_status(created["payment_id"], "provisioned", timeout=20)
        assert view["status"] == "provisioned"
        await call("GET", f"/api/pay/check-status/{created['payment_id']}")
        # Credentials wrong, then right (including the rotation secrets).
        item = [{"signature": "1" * 64}]
        for auth in ("wrong", known["helius_webhook_secret"], known["helius_webhook_secret_next"]):
            await call("POST", "/api/webhooks/helius", json=item, headers={"Authorization": auth})
        body = paymob_callback(900_001)
        for secret in ("wrong", stack.paymob_secret, known["paymob_hmac_secret_next"]):
            digest = paymob_hmac(signed(body["obj"]), secret)
            await call("POST", "/api/webhooks/paymob", json=body, params={"hmac": digest})
        depart = (utcnow().date() + timedelta(days=30)).isoformat()
        search = {
            "originLocationCode": "CAI",
            "destinationLocationCode": "JED",
            "departureDate": depart,
            "adults": 1,
        }
        for token in ("wrong", known["admin_token"]):
            status, _ = await call(
                "POST", "/api/proxy/amadeus/search", json=search, headers={"X-Admin-Token": token}
            )
            assert status == 200
        status, _, raw = await stack.call("GET", "/metrics")
        answers.append(raw)
        services = (stack.system.payments, stack.system.verifier, stack.proxy, stack.notifier)
        async with aiohttp.ClientSession() as http:
            for service in services:
                async with http.get(service.base_url + "/metrics") as resp:
                    answers.append(await resp.read())
        text = logs.getvalue()
    assert len(text) > 10_000, "the logs were not captured"
    for name, value in known.items():
        assert value not in text, f"{name} appears in the logs"
        for answer in answers:
            assert value.encode() not in answer, f"{name} appears in an answer"
    with capsys.disabled():
        print(
            f"\nsecrets: {len(known)} secret values absent from {len(text)} bytes of logs "
            f"and {len(answers)} answers"
        )


# --- rate limits cannot be bypassed by headers -----------------------------------------------


SPOOFS: list[dict[str, str]] = [
    {"X-Forwarded-For": "203.0.113.{n}"},
    {"X-Forwarded-For": "203.0.113.{n}, 10.0.0.1"},
    {"Forwarded": "for=198.51.100.{n};proto=https"},
    {"X-Real-IP": "192.0.2.{n}"},
    {"X-User-Id": "user-{n}"},
    {"X-Admin-Token": "guess-{n}"},
    {"X-Admin-Token": ""},
]


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: next(iter(s)))
async def test_spoofed_headers_buy_no_extra_requests(
    full_stack_factory: FullStackFactory, spoof: dict[str, str]
) -> None:
    limit = 3
    stack = await full_stack_factory(limit=limit, window=30)
    statuses = []
    for n in range(limit * 3):
        headers = {name: value.format(n=n) for name, value in spoof.items()}
        status, answer_headers, raw = await stack.call(
            "POST", "/api/proxy/amadeus/search", json={}, headers=headers
        )
        statuses.append(status)
        if status == 429:
            assert json.loads(raw)["error"]["code"] == "rate_limited"
            assert "Retry-After" in answer_headers
    # Admitted requests are 422 (empty search); everything past the limit is 429.
    assert statuses == [422] * limit + [429] * (limit * 2), statuses


# --- a guessed id tells nothing ----------------------------------------------------------------


async def test_unknown_and_malformed_ids_get_the_same_404(
    full_stack_factory: FullStackFactory,
) -> None:
    stack = await full_stack_factory()
    await stack.system.create()  # a real payment exists; the guesses are not it
    guesses = [
        "pay_" + secrets.token_urlsafe(18),
        "pay_" + secrets.token_urlsafe(18),
        uuid.uuid4().hex,
        "a",
        "x" * 64,
        "x" * 65,
        "..%2F..%2Fetc%2Fpasswd",
        "%3Cscript%3E",
        "%00",
        "1%20OR%201%3D1",
    ]
    for route in ("/api/pay/check-status/", "/api/sse/payment-status/"):
        bodies = set()
        for guess in guesses:
            status, headers, raw = await stack.call("GET", route + guess)
            assert status == 404, (route, guess, status, raw[:200])
            assert headers["Content-Type"].startswith("application/json")
            bodies.add(raw)
        assert len(bodies) == 1, (route, bodies)
        assert json.loads(bodies.pop()) == {
            "error": {"code": "not_found", "message": "payment not found", "details": []}
        }
