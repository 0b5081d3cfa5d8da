"""Legacy Paymob callbacks end to end: the gateway verifies the HMAC and stores each authentic
callback in JetStream before its 200; the amadeus-proxy (owner of the bookings DB) records it
and applies it to the booking of its Paymob order, once, whatever is redelivered. Real NATS and
Redis; both services built by their own factories; the bookings DB a libSQL file per test."""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from axiom_amadeus_proxy.app import bookings_db_key
from axiom_amadeus_proxy.app import create_app as create_proxy
from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_gateway.app import create_app as create_gateway
from axiom_gateway.paymob_hmac import PAYMOB_HMAC_FIELDS, SignedValue, paymob_hmac
from axiom_gateway.settings import GatewaySettings
from axiom_shared.db import Database
from axiom_shared.nats import publish_event
from axiom_shared.schemas import PaymobTransactionReceived
from axiom_shared.topology import AMADEUS_PAYMOB_CALLBACKS, PAYMOB_TRANSACTION_SUBJECT, WEBHOOKS
from sandbox.infra import NatsServer, RedisServer
from tests.fixtures.infra import RunningApp, start_app, wait_for

pytestmark = pytest.mark.connected

SECRET = "dummy_hmac"
PATH = "/api/webhooks/paymob"
#: shared/reference/paymob.md: this callback, signed with `dummy_hmac`, carries this HMAC.
VECTOR_HMAC = (
    "51860052ecc6d9f08ac30a549359019e2eee837913b5673094c242c817ddf57c"
    "055ba5e3e9c0894b1171e62c2d37cd55ff98a46a0e28e1ccf2e4a907e6683aa5"
)


def vector_obj() -> dict[str, Any]:
    """The reference vector as Paymob POSTs it, with some of the unsigned fields it adds."""
    return {
        "id": "dummy_id",
        "pending": False,
        "amount_cents": 111111,
        "success": True,
        "is_auth": False,
        "is_capture": False,
        "is_standalone_payment": True,
        "is_voided": False,
        "is_refunded": False,
        "is_3d_secure": True,
        "integration_id": 1234,
        "profile_id": 12,
        "has_parent_transaction": False,
        "order": {"id": 123, "created_at": "2025-04-01T17:29:10.1", "merchant": {"id": 12}},
        "created_at": "2025-04-01T17:29:16.967925",
        "currency": "EGP",
        "source_data": {"pan": "1111", "type": "card", "sub_type": "Visa"},
        "error_occured": False,
        "owner": 12,
        "data": {"message": "Approved", "txn_response_code": "APPROVED"},
    }


def new_obj(**changes: Any) -> dict[str, Any]:
    """A callback of our own: fresh transaction and order ids (the stream is shared by the
    tests of this module), the vector's other values, then `changes`."""
    obj = vector_obj()
    obj["id"] = random.randrange(10**9, 10**10)
    obj["order"] = {**obj["order"], "id": random.randrange(10**9, 10**10)}
    obj.update(changes)
    return obj


def signed_values(obj: dict[str, Any]) -> dict[str, SignedValue]:
    values: dict[str, SignedValue] = {}
    for name in PAYMOB_HMAC_FIELDS:
        outer, _, inner = name.partition(".")
        values[name] = obj[outer][inner] if inner else obj[outer]
    return values


def sign(obj: dict[str, Any], secret: str = SECRET) -> str:
    return paymob_hmac(signed_values(obj), secret)


def redirect_query(obj: dict[str, Any], order_key: str = "order") -> dict[str, str]:
    """The GET redirect's flat query keys for the same transaction (booleans as text)."""
    query: dict[str, str] = {}
    for name, value in signed_values(obj).items():
        key = order_key if name == "order.id" else name
        query[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    query["data.message"] = "Approved"
    query["merchant_order_id"] = "legacy-1"
    return query


@dataclass
class PaymobStack:
    gateway: RunningApp
    proxy: RunningApp
    nc: NATS
    http: aiohttp.ClientSession

    @property
    def db(self) -> Database:
        db: Database = self.proxy[bookings_db_key]
        return db

    async def post(
        self, obj: dict[str, Any] | None, hmac: str | None, **kwargs: Any
    ) -> tuple[int, Any]:
        params = {"hmac": hmac} if hmac is not None else {}
        if obj is not None:
            kwargs["json"] = {"type": "TRANSACTION", "obj": obj}
        async with self.http.post(
            self.gateway.base_url + PATH, params=params, **kwargs
        ) as response:
            return response.status, await response.json()

    async def get(self, query: dict[str, str], hmac: str | None) -> tuple[int, Any]:
        params = {**query, **({"hmac": hmac} if hmac is not None else {})}
        async with self.http.get(self.gateway.base_url + PATH, params=params) as response:
            return response.status, await response.json()

    async def add_booking(
        self, order_id: object, amount_cents: int | None = 111111, currency: str | None = "EGP"
    ) -> str:
        booking_id = f"bk_{order_id}"
        await self.db.execute(
            "INSERT INTO agent_transactions (id, agent_id, user_id, kind, amount_cents,"
            " currency, status, paymob_order_id) VALUES (?, 'legacy', 'u1', 'flight', ?, ?,"
            " 'completed', ?)",
            [booking_id, amount_cents, currency, str(order_id)],
        )
        return booking_id

    async def booking(self, booking_id: str) -> dict[str, Any]:
        row = await self.db.fetch_one(
            "SELECT payment_status, payment_provider, paymob_transaction_id, payment_updated_at"
            " FROM agent_transactions WHERE id = ?",
            [booking_id],
        )
        assert row is not None
        return row

    async def callbacks(self, order_id: object) -> list[dict[str, Any]]:
        return await self.db.fetch_all(
            "SELECT transaction_id, state, amount_cents, currency, booking_id, flag, applied,"
            " via, raw FROM paymob_callbacks WHERE order_id = ? ORDER BY id",
            [str(order_id)],
        )

    async def stored(self, transaction_id: object = "*") -> int:
        """Messages in the WEBHOOKS stream for this transaction (all Paymob ones with `*`)."""
        subject = PAYMOB_TRANSACTION_SUBJECT.format(transaction_id=transaction_id)
        info = await self.nc.jetstream().stream_info(WEBHOOKS.name, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())

    async def consumed(self) -> None:
        """Wait until the proxy's consumer has acknowledged everything stored so far."""

        async def done() -> bool:
            info = await self.nc.jetstream().consumer_info(
                WEBHOOKS.name, AMADEUS_PAYMOB_CALLBACKS.durable
            )
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await wait_for(done, timeout=10.0)


StackFactory = Callable[..., Awaitable[PaymobStack]]


@pytest.fixture
async def paymob_stack_factory(
    nats_server: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    """`await factory(**gateway_overrides)`: an amadeus-proxy and a gateway (secret SECRET)."""
    started: list[RunningApp] = []
    clients: list[NATS | aiohttp.ClientSession] = []

    async def start(**gateway_overrides: Any) -> PaymobStack:
        proxy = await start_app(
            create_proxy(
                AmadeusProxySettings.load(
                    **nats_server.login("amadeus-proxy"),
                    redis_url=redis_server.url,
                    bookings_db_url=f"file:{tmp_path / 'bookings.db'}",
                    port=0,
                )
            )
        )
        started.append(proxy)
        values: dict[str, Any] = {
            **nats_server.login("gateway"),
            "redis_url": redis_server.url,
            "port": 0,
            "paymob_hmac_secret": SECRET,
        }
        values.update(gateway_overrides)
        gateway = await start_app(create_gateway(GatewaySettings.load(**values)))
        started.append(gateway)
        nc = NATS()
        await nc.connect(nats_server.url)
        http = aiohttp.ClientSession()
        clients.extend([nc, http])
        return PaymobStack(gateway, proxy, nc, http)

    yield start
    for client in clients:
        await client.close()
    for running in reversed(started):
        await running.server.close()


@pytest.fixture
async def stack(paymob_stack_factory: StackFactory) -> PaymobStack:
    return await paymob_stack_factory()


async def paid(stack: PaymobStack, booking_id: str) -> None:
    async def is_paid() -> bool:
        return bool((await stack.booking(booking_id))["payment_status"] == "paid")

    await wait_for(is_paid, timeout=10.0)


# --- (1) the reference vector, and every tampering ------------------------------------------


async def test_the_reference_vector_pays_its_booking(stack: PaymobStack) -> None:
    booking_id = await stack.add_booking(123)
    status, body = await stack.post(vector_obj(), VECTOR_HMAC)
    assert status == 200, body
    assert body == {
        "transaction_id": "dummy_id",
        "order_id": "123",
        "state": "success",
        "duplicate": False,
    }
    await paid(stack, booking_id)
    booking = await stack.booking(booking_id)
    assert booking["payment_provider"] == "paymob"
    assert booking["paymob_transaction_id"] == "dummy_id"
    [record] = await stack.callbacks(123)
    assert record["state"] == "success"
    assert (record["applied"], record["flag"], record["booking_id"]) == (1, None, booking_id)
    assert json.loads(record["raw"]) == vector_obj()  # kept whole, unsigned fields included
    assert await stack.stored("dummy_id") == 1


def _tampered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value + "1"


async def test_any_changed_field_or_another_secret_is_refused_and_nothing_stored(
    stack: PaymobStack,
) -> None:
    obj = new_obj()
    booking_id = await stack.add_booking(obj["order"]["id"])
    hmac = sign(obj)
    before = await stack.stored()
    for name in PAYMOB_HMAC_FIELDS:
        outer, _, inner = name.partition(".")
        changed = json.loads(json.dumps(obj))
        if inner:
            changed[outer][inner] = _tampered(changed[outer][inner])
        else:
            changed[outer] = _tampered(changed[outer])
        status, body = await stack.post(changed, hmac)
        assert status == 401, (name, body)
        assert body["error"]["code"] == "unauthorized"
    for secret in ("dummy_hmac2", "DUMMY_HMAC", "dummy_hma"):
        status, _ = await stack.post(obj, sign(obj, secret))
        assert status == 401, secret
    for hmac_param in (None, "", "00" * 64, "not-hex"):
        status, body = await stack.post(obj, hmac_param)
        assert status == 401, hmac_param
        assert set(body) == {"error"}
    assert await stack.stored() == before
    await asyncio.sleep(0.3)  # a consumer given anything would have written by now
    assert await stack.callbacks(obj["order"]["id"]) == []
    assert (await stack.booking(booking_id))["payment_status"] is None


async def test_no_secret_refuses_everything_and_the_next_secret_rotates(
    paymob_stack_factory: StackFactory,
) -> None:
    unset = await paymob_stack_factory(paymob_hmac_secret=None)
    obj = new_obj()
    status, body = await unset.post(obj, sign(obj))
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    status, _ = await unset.get(redirect_query(obj), sign(obj))
    assert status == 401
    assert await unset.stored(obj["id"]) == 0

    rotating = await paymob_stack_factory(
        paymob_hmac_secret="the-new-one", paymob_hmac_secret_next=SECRET
    )
    status, _ = await rotating.post(obj, sign(obj))
    assert status == 200
    other = new_obj()
    status, _ = await rotating.post(other, sign(other, "the-new-one"))
    assert status == 200
    status, _ = await rotating.post(other, sign(other, "neither"))
    assert status == 401


# --- (2) once, whatever is redelivered; unknown orders; declined and refunded ----------------


async def test_the_same_callback_three_times_changes_the_booking_once(stack: PaymobStack) -> None:
    obj = new_obj()
    booking_id = await stack.add_booking(obj["order"]["id"])
    answers = [await stack.post(obj, sign(obj)) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [body["duplicate"] for _, body in answers] == [False, True, True]
    assert await stack.stored(obj["id"]) == 1  # JetStream kept one copy (Nats-Msg-Id)
    await paid(stack, booking_id)
    first = await stack.booking(booking_id)

    # Past the duplicate window (or a replayed stream): the consumer sees the fact again.
    event = PaymobTransactionReceived.from_bytes(
        (
            await stack.nc.jetstream().get_last_msg(WEBHOOKS.name, f"webhooks.paymob.{obj['id']}")
        ).data
        or b""
    )
    for _ in range(2):
        await publish_event(
            stack.nc.jetstream(),
            PAYMOB_TRANSACTION_SUBJECT.format(transaction_id=obj["id"]),
            event,
        )
    await stack.consumed()
    assert await stack.booking(booking_id) == first
    [record] = await stack.callbacks(obj["order"]["id"])
    assert (record["state"], record["applied"]) == ("success", 1)


async def test_a_callback_for_an_order_we_never_issued_is_flagged_and_answered_200(
    stack: PaymobStack,
) -> None:
    obj = new_obj()
    status, body = await stack.post(obj, sign(obj))
    assert status == 200
    assert body["state"] == "success"
    await stack.consumed()
    [record] = await stack.callbacks(obj["order"]["id"])
    assert (record["flag"], record["applied"], record["booking_id"]) == ("unknown_order", 0, None)


async def test_another_amount_than_the_bookings_is_flagged_not_applied(
    stack: PaymobStack,
) -> None:
    obj = new_obj(amount_cents=100)
    booking_id = await stack.add_booking(obj["order"]["id"], amount_cents=111111)
    status, _ = await stack.post(obj, sign(obj))
    assert status == 200
    await stack.consumed()
    [record] = await stack.callbacks(obj["order"]["id"])
    assert (record["flag"], record["applied"]) == ("amount_mismatch", 0)
    assert (await stack.booking(booking_id))["payment_status"] is None


async def test_declined_paid_then_refunded_are_recorded_with_their_state(
    stack: PaymobStack,
) -> None:
    declined = new_obj(success=False)
    order_id = declined["order"]["id"]
    booking_id = await stack.add_booking(order_id)
    status, body = await stack.post(declined, sign(declined))
    assert (status, body["state"]) == (200, "declined")
    await stack.consumed()
    assert (await stack.booking(booking_id))["payment_status"] is None

    # The customer tries again: another transaction of the same order, approved.
    approved = new_obj(order=declined["order"])
    await stack.post(approved, sign(approved))
    await paid(stack, booking_id)

    refund = {**approved, "is_refunded": True}
    for _ in range(3):
        status, body = await stack.post(refund, sign(refund))
        assert (status, body["state"]) == (200, "refunded")
    await stack.consumed()
    booking = await stack.booking(booking_id)
    assert (booking["payment_status"], booking["payment_provider"]) == ("refunded", "paymob")
    records = await stack.callbacks(order_id)
    assert [(r["transaction_id"], r["state"], r["applied"]) for r in records] == [
        (str(declined["id"]), "declined", 0),
        (str(approved["id"]), "success", 1),
        (str(approved["id"]), "refunded", 1),
    ]


async def test_a_refund_seen_before_its_payment_leaves_the_booking_unpaid(
    stack: PaymobStack,
) -> None:
    approved = new_obj()
    booking_id = await stack.add_booking(approved["order"]["id"])
    refund = {**approved, "is_refunded": True}
    await stack.post(refund, sign(refund))
    await stack.consumed()
    await stack.post(approved, sign(approved))
    await stack.consumed()
    assert (await stack.booking(booking_id))["payment_status"] is None
    states = [(r["state"], r["applied"]) for r in await stack.callbacks(approved["order"]["id"])]
    assert states == [("refunded", 0), ("success", 0)]


# --- (3) the GET redirect -------------------------------------------------------------------


@pytest.mark.parametrize("order_key", ["order", "order_id"])
async def test_the_redirect_verifies_the_same_way(stack: PaymobStack, order_key: str) -> None:
    obj = new_obj()
    booking_id = await stack.add_booking(obj["order"]["id"])
    query = redirect_query(obj, order_key)
    for key in query:
        if key.startswith(("data.", "merchant_")):
            continue  # not signed
        changed = {**query, key: query[key] + "1"}
        status, body = await stack.get(changed, sign(obj))
        assert status in (401, 422), (key, body)
    status, _ = await stack.get(query, sign(obj, "another"))
    assert status == 401
    status, _ = await stack.get(query, None)
    assert status == 401
    assert await stack.stored(obj["id"]) == 0

    status, body = await stack.get(query, sign(obj))
    assert status == 200, body
    assert (body["state"], body["duplicate"]) == ("success", False)
    await paid(stack, booking_id)
    [record] = await stack.callbacks(obj["order"]["id"])
    assert record["via"] == "redirect"
    # The server-to-server callback for the same transaction is the same fact: stored once.
    status, body = await stack.post(obj, sign(obj))
    assert (status, body["duplicate"]) == (200, True)
    assert await stack.stored(obj["id"]) == 1


async def test_a_redirect_missing_a_signed_key_names_it(stack: PaymobStack) -> None:
    obj = new_obj()
    query = redirect_query(obj)
    del query["source_data.pan"]
    status, body = await stack.get(query, sign(obj))
    assert status == 422
    assert [d["field"] for d in body["error"]["details"]] == ["source_data.pan"]
    query = {**redirect_query(obj), "success": "True"}
    status, body = await stack.get(query, sign(obj))
    assert status == 422
    assert [d["field"] for d in body["error"]["details"]] == ["success"]


# --- (4) malformed bodies -------------------------------------------------------------------


def _error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert {"code", "message", "details"} <= set(body["error"])
    error: dict[str, Any] = body["error"]
    return error


async def test_malformed_bodies_are_4xx_json_errors_and_nothing_is_stored(
    stack: PaymobStack,
) -> None:
    obj = new_obj()
    hmac = sign(obj)
    before = await stack.stored()
    json_type = {"Content-Type": "application/json"}

    status, body = await stack.post(
        None, hmac, data=b'{"type": "TRANSACTION", "obj": {', headers=json_type
    )
    assert (status, _error(body)["code"]) == (400, "invalid_json")

    status, body = await stack.post(None, hmac, json={"type": "TRANSACTION"})
    assert (status, _error(body)["code"]) == (422, "validation_error")
    assert [d["field"] for d in body["error"]["details"]] == ["obj"]

    for field, value in [
        ("amount_cents", "a lot"),
        ("success", "true"),
        ("is_refunded", 0),
        ("id", 1.5),
        ("order", 123),
        ("source_data", {"pan": "1111", "type": "card"}),
    ]:
        status, body = await stack.post({**obj, field: value}, hmac)
        assert status == 422, field
        fields = [d["field"] for d in _error(body)["details"]]
        assert fields, field
        assert all(f.startswith(f"obj.{field}") for f in fields), (field, fields)

    status, body = await stack.post(None, hmac, json={"type": "TOKEN", "obj": obj})
    assert status == 422
    assert [d["field"] for d in body["error"]["details"]] == ["type"]

    status, body = await stack.post(None, hmac, json=[obj])
    assert (status, _error(body)["code"]) == (422, "validation_error")

    status, body = await stack.post(
        None, hmac, data=json.dumps({"obj": obj}), headers={"Content-Type": "text/plain"}
    )
    assert (status, _error(body)["code"]) == (415, "unsupported_media_type")

    one_mb = json.dumps({"type": "TRANSACTION", "obj": {**obj, "padding": "x" * 2**20}})
    status, body = await stack.post(None, hmac, data=io.BytesIO(one_mb.encode()), headers=json_type)
    assert (status, _error(body)["code"]) == (413, "payload_too_large")

    assert await stack.stored() == before
    await asyncio.sleep(0.3)
    assert await stack.callbacks(obj["order"]["id"]) == []
