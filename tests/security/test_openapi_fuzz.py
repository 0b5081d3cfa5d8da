"""Schema fuzzing of the whole gateway from its own `/openapi.json` (issue 9, "Proof").

schemathesis generates requests for every documented operation, both schema-conforming
(positive) and schema-breaking (negative), and sends them to the real gateway in this process,
with payments, verifier, notifier, amadeus-proxy and the Amadeus double behind it on real NATS,
Redis, libSQL files and the Solana sandbox. Each answer must be no server error (no 5xx at all:
every dependency is up) and must conform to the document: a documented status code, a documented
content type and a body that validates against the documented schema.

Webhooks are fuzzed with and without valid credentials: the Helius `Authorization` header is
the configured secret for one run and generated for the other; a Paymob `hmac` is an HMAC over
the body, which a generic fuzzer cannot make, so the generated Paymob callbacks are
unauthenticated and `test_paymob_valid_hmac_property` sends property-generated callbacks with
valid HMACs on its own.

The rate limit on `/api/proxy/*` is raised for the run (it would answer most requests 429).
Set `AXIOM_FUZZ_SEED` to replay a run, `AXIOM_FUZZ_EXAMPLES` to change the examples per run.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from axiom_gateway.paymob_hmac import paymob_hmac
from tests.fixtures.system import ORDER
from tests.security.conftest import FullStack, FullStackFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Examples per run; a run is (operation, generation mode, credentials or real ids): 13
#: operations x 2 modes, + 2 Helius runs with the valid secret, + 4 runs with a real order or
#: payment id, at 210 each, is over 5,000 requests.
EXAMPLES = int(os.environ.get("AXIOM_FUZZ_EXAMPLES", "210"))
MIN_REQUESTS = 5_000
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
HELIUS = "POST /api/webhooks/helius"
PAYMOB = "POST /api/webhooks/paymob"


@dataclass
class FuzzReport:
    requests: int = 0
    per_route: dict[str, Counter[int]] = field(default_factory=dict)
    per_status: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    failures_per_check: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)

    def lines(self, seed_value: int, seconds: float) -> Iterator[str]:
        yield (
            f"openapi fuzz (seed {seed_value}): {self.requests} requests in {seconds:.1f} s, "
            f"{len(self.failures)} check failures, {len(self.errors)} transport errors"
        )
        for route, codes in sorted(self.per_route.items()):
            by_status = " ".join(f"{code}x{n}" for code, n in sorted(codes.items()))
            yield f"  {codes.total():5d}  {route}  ({by_status})"
        yield from (f"  (no cases: {label})" for label in self.not_applicable)
        yield "  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.per_status.items()))
        for name, count in sorted(self.failures_per_check.items()):
            yield f"  FAILED {name}: {count}"
        yield from (f"  {failure}" for failure in self.failures[:10])
        yield from (f"  error: {error}" for error in self.errors[:10])


def documented_schema(doc: dict[str, Any]) -> dict[str, Any]:
    """The gateway's document, with the Helius body written down: the route documents no
    request body (it is a provider's array of enhanced or raw items, validated item by item),
    so without it the fuzzer would only ever send an empty body."""
    doc = copy.deepcopy(doc)
    operation = doc["paths"]["/api/webhooks/helius"]["post"]
    operation.setdefault(
        "requestBody",
        {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": 4,
                        "items": {
                            "type": "object",
                            "properties": {
                                "signature": {
                                    "type": "string",
                                    "pattern": "^[1-9A-HJ-NP-Za-km-z]{64,88}$",
                                },
                                "transaction": {"type": "object"},
                            },
                        },
                    }
                }
            },
        },
    )
    return doc


def fuzz(
    schema: Any, base_url: str, helius_secret: str, known: dict[str, str], seed_value: int
) -> FuzzReport:
    """Runs in a worker thread (schemathesis sends with `requests`; the stack serves on the
    test's event loop)."""
    report = FuzzReport()
    session = requests.Session()
    fuzz_settings = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    def run(label: str, strategy: st.SearchStrategy[Any]) -> None:
        @seed(seed_value)
        @fuzz_settings
        @given(case=strategy)
        def one(case: Any) -> None:
            try:
                response = case.call(base_url=base_url, session=session, timeout=15)
            except requests.RequestException as exc:
                report.errors.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                return
            report.requests += 1
            report.per_route.setdefault(label, Counter())[response.status_code] += 1
            report.per_status[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, BaseExceptionGroup) as exc:
                subs = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
                titles = [str(getattr(sub, "title", type(sub).__name__)) for sub in subs]
                for title in titles:
                    report.failures_per_check[title] += 1
                report.failures.append(
                    f"{label} -> {response.status_code} {'; '.join(titles)}: "
                    f"{case.method} {case.formatted_path[:80]} query={str(case.query)[:80]} "
                    f"headers={str(case.headers)[:80]} body={str(case.body)[:80]} "
                    f"answer={response.text[:120]!r}"
                )

        try:
            one()
        except Unsatisfiable:
            # Nothing to break (e.g. a negative run of a route without parameters or body).
            report.not_applicable.append(label)

    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            run(f"{name} [{mode.value}]", operation.as_strategy(generation_mode=mode))
            # Generated ids are almost never real: once more with a real order / payment, so
            # that the answers past the lookup (200, 422 on the body, ...) are checked too.
            fixed = {
                param: value
                for param, value in known.items()
                if "{" + param + "}" in operation.path and "/sse/" not in operation.path
            }
            if fixed and mode is schemathesis.GenerationMode.POSITIVE:
                run(
                    f"{name} [{mode.value}, real {', '.join(fixed)}]",
                    operation.as_strategy(generation_mode=mode, path_parameters=fixed),
                )
            if name == HELIUS:
                run(
                    f"{name} [{mode.value}, valid Authorization]",
                    operation.as_strategy(
                        generation_mode=mode, headers={"Authorization": helius_secret}
                    ),
                )
    session.close()
    return report


@pytest.mark.timeout(600)
async def test_every_route_survives_schema_fuzzing(
    full_stack_factory: FullStackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await full_stack_factory(limit=1_000_000, window=1)
    status, _, raw = await stack.call("GET", "/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(documented_schema(json.loads(raw)))
    seed_value = int(os.environ.get("AXIOM_FUZZ_SEED") or random.randrange(2**32))
    started = time.monotonic()
    payment = await stack.system.create()
    known = {"order_id": ORDER, "payment_id": payment["payment_id"]}
    report = await asyncio.to_thread(
        fuzz, schema, stack.url, stack.helius_secret, known, seed_value
    )
    took = time.monotonic() - started
    with capsys.disabled():
        print()
        for line in report.lines(seed_value, took):
            print(line)
    assert report.requests >= MIN_REQUESTS
    assert not report.errors, report.errors[:5]
    assert not report.failures, "\n".join(report.failures[:10])
    assert all(code < 500 for code in report.per_status)


# --- Paymob with valid HMACs ---------------------------------------------------------------

_ids = st.one_of(st.integers(min_value=1, max_value=2**53), st.from_regex(r"\A[0-9]{1,12}\Z"))
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@st.composite
def paymob_callbacks(draw: st.DrawFn) -> dict[str, Any]:
    """Any callback Paymob could send: its signed fields with any values of the right types,
    plus unknown fields (which pass through)."""
    obj: dict[str, Any] = {
        "amount_cents": draw(
            st.one_of(st.integers(min_value=0, max_value=10**12), st.from_regex(r"\A[0-9]{1,12}\Z"))
        ),
        "created_at": draw(_text),
        "currency": draw(st.text(st.characters(codec="ascii"), min_size=1, max_size=8)),
        "id": draw(_ids),
        "integration_id": draw(st.one_of(st.integers(0, 10**9), _text)),
        "order": {"id": draw(_ids), **draw(st.dictionaries(st.sampled_from(["x", "y"]), _text))},
        "owner": draw(st.one_of(st.integers(0, 10**9), _text)),
        "source_data": {
            "pan": draw(_text),
            "sub_type": draw(_text),
            "type": draw(st.sampled_from(["card", "wallet", "cash_present"])),
        },
    }
    for flag in (
        "error_occured",
        "has_parent_transaction",
        "is_3d_secure",
        "is_auth",
        "is_capture",
        "is_refunded",
        "is_standalone_payment",
        "is_voided",
        "pending",
        "success",
    ):
        obj[flag] = draw(st.booleans())
    obj.update(draw(st.dictionaries(st.sampled_from(["extra", "data", "note"]), _text)))
    return {"type": "TRANSACTION", "obj": obj}


def signed_values(obj: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in obj.items() if k not in ("order", "source_data")}
    values["order.id"] = obj["order"]["id"]
    for key in ("pan", "sub_type", "type"):
        values[f"source_data.{key}"] = obj["source_data"][key]
    return values


PAYMOB_EXAMPLES = 60


@pytest.mark.timeout(180)
async def test_paymob_valid_hmac_property(
    full_stack_factory: FullStackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every callback with a valid HMAC is stored (200, a receipt naming it); the same
    callback with one signed field changed is a 401."""
    stack = await full_stack_factory()
    statuses: Counter[str] = Counter()

    def check(stack: FullStack, post: Callable[[dict[str, Any], str], tuple[int, Any]]) -> None:
        @seed(20251)
        @settings(
            max_examples=PAYMOB_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=paymob_callbacks())
        def one(body: dict[str, Any]) -> None:
            digest = paymob_hmac(signed_values(body["obj"]), stack.paymob_secret)
            status, answer = post(body, digest)
            statuses[f"valid: {status}"] += 1
            assert status == 200, answer
            assert answer["transaction_id"] == str(body["obj"]["id"])
            assert answer["order_id"] == str(body["obj"]["order"]["id"])
            tampered = copy.deepcopy(body)
            tampered["obj"]["success"] = not body["obj"]["success"]
            status, answer = post(tampered, digest)
            statuses[f"tampered: {status}"] += 1
            assert status == 401, answer
            assert answer["error"]["code"] == "unauthorized"

        one()

    def post(body: dict[str, Any], digest: str) -> tuple[int, Any]:
        response = requests.post(
            f"{stack.url}/api/webhooks/paymob",
            params={"hmac": digest},
            json=body,
            timeout=15,
        )
        return response.status_code, response.json()

    await asyncio.to_thread(check, stack, post)
    with capsys.disabled():
        print(f"\npaymob valid-HMAC property: {PAYMOB_EXAMPLES} examples, {dict(statuses)}")
