"""Seen at `confirmed` (issue 18), end to end on real NATS, libSQL and the sandbox chain: a
transaction carrying a payment's reference shows in check-status and the SSE stream as seen
(`seen_signature`, `seen_at`) within 2 s of `confirmed`, with no status change and nothing
fulfilled until `finalized`; and the hostile side: transactions that would not be receipts are
never shown as seen, and seen markers forged on the bus move no status and fulfil nothing,
ending as `not_finalized` or `not_a_receipt`."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.signature import Signature

from axiom_shared.nats import connect_nats, publish_event
from axiom_shared.schemas import PaymentSeen, utcnow
from axiom_shared.settings import DEV_MERCHANT_WALLET
from axiom_shared.topology import SEEN_SUBJECT
from tests.e2e.test_verification import status_events, wait_observation
from tests.fixtures.notifier import NotifierFactory, open_stream
from tests.fixtures.solana import send_transfer
from tests.fixtures.system import PRICE, PaymentSystem

pytestmark = pytest.mark.e2e

SEEN_WITHIN = 2.0


async def send(
    system: PaymentSystem,
    payer: Keypair,
    lamports: int,
    references: tuple[str, ...],
    recipient: str = DEV_MERCHANT_WALLET,
) -> Signature:
    """Sent, not waited for: the tests hold the chain's clock."""
    async with AsyncClient(system.solana.rpc_url) as rpc:
        return await send_transfer(rpc, payer, recipient, lamports, references)


async def wait_view(
    system: PaymentSystem, payment_id: str, field: str, value: Any, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = await system.status(payment_id)
        if view[field] == value:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"{field} never became {value!r}: {view}")
        await asyncio.sleep(0.02)


async def entitlements(system: PaymentSystem) -> int:
    return await system.count("SELECT count(*) FROM entitlements")


async def forge(system: PaymentSystem, payment_id: str, signature: str) -> None:
    """A seen marker published straight on the bus, as anyone able to publish there could."""
    nc = await connect_nats(system.nats_url, "test-forger")
    try:
        await publish_event(
            nc.jetstream(),
            SEEN_SUBJECT.format(payment_id=payment_id),
            PaymentSeen(payment_id=payment_id, signature=signature, slot=1, seen_at=utcnow()),
        )
    finally:
        await nc.close()


async def test_seen_within_2s_of_confirmed_on_check_status_and_sse_then_final(
    payment_system: PaymentSystem, notifier_factory: NotifierFactory
) -> None:
    system = payment_system
    notifier = await notifier_factory()
    payer = await system.payer()
    created = await system.create()
    payment_id = created["payment_id"]
    stream = await open_stream(notifier.base_url, payment_id)
    try:
        first = await stream.next_event()
        assert first is not None
        assert first.json()["seen_signature"] is None
        await system.solana.admin.pause_clock()
        try:
            signature = str(await send(system, payer, PRICE, (created["reference"],)))
            await asyncio.sleep(0.5)
            view = await system.status(payment_id)
            assert view["seen_signature"] is None, "processed is not seen: confirmed is"

            confirming = time.monotonic()
            await system.solana.admin.advance(1)
            view = await wait_view(system, payment_id, "seen_signature", signature)
            seen_after = time.monotonic() - confirming
            assert view["status"] == "pending"
            assert view["seen_at"] is not None
            assert view["seen_outcome"] is None
            assert view["received_lamports"] == "0"
            assert view["tx_signature"] is None
            event = await stream.next_event(timeout=SEEN_WITHIN)
            sse_after = time.monotonic() - confirming
            assert event is not None
            assert event.json()["seen_signature"] == signature
            assert event.json()["status"] == "pending"
            assert event.id == str(view["version"])
            assert await entitlements(system) == 0, "nothing is fulfilled at confirmed"
            finalizing = time.monotonic()
            await system.solana.finalize()
        finally:
            await system.solana.admin.resume_clock()
        view = await system.wait_status(payment_id, "provisioned", timeout=5)
        provisioned_after = time.monotonic() - finalizing
    finally:
        await stream.close()
    print(
        f"seen (check-status) {seen_after:.3f} s, seen (SSE) {sse_after:.3f} s after confirmed;"
        f" provisioned {provisioned_after:.3f} s after finalized"
    )
    assert seen_after < SEEN_WITHIN
    assert sse_after < SEEN_WITHIN
    assert view["tx_signature"] == signature
    assert view["seen_signature"] == signature
    assert view["seen_outcome"] == "counted"
    assert await entitlements(system) == 1
    # The marker was a version of its own: no status moved for it.
    statuses = [
        (e.previous_status, e.payment.status) for e in await status_events(system, payment_id)
    ]
    assert ("pending", "pending") in [(str(a), str(b)) for a, b in statuses]


async def test_transactions_that_would_not_be_receipts_are_never_seen(
    payment_system: PaymentSystem,
) -> None:
    system = payment_system
    payer = await system.payer()
    created = await system.create()
    other = await system.create()
    payment_id, reference = created["payment_id"], created["reference"]
    await system.solana.admin.pause_clock()
    try:
        # Pays someone else, names two of our payments, names no reference at all.
        elsewhere = await send(system, payer, PRICE, (reference,), str(Keypair().pubkey()))
        both = await send(system, payer, PRICE, (reference, other["reference"]))
        await send(system, payer, PRICE, ())
        await system.solana.admin.advance(1)
        await asyncio.sleep(1.5)
        view = await system.status(payment_id)
        assert view["seen_signature"] is None
        assert view["status"] == "pending"
        await system.solana.finalize()
    finally:
        await system.solana.admin.resume_clock()
    await wait_observation(system, str(elsewhere), "no_credit")
    await wait_observation(system, str(both), "ambiguous", payments=2)
    view = await system.status(payment_id)
    assert view["seen_signature"] is None
    assert view["status"] == "pending"
    assert await entitlements(system) == 0


async def test_an_underpayment_is_seen_but_fulfils_nothing(
    payment_system: PaymentSystem,
) -> None:
    """Half the price with the reference looks like a receipt at confirmed (it is one,
    partial): shown as seen, counted at finalized, the payment stays pending, unfulfilled."""
    system = payment_system
    payer = await system.payer()
    created = await system.create()
    payment_id = created["payment_id"]
    await system.solana.admin.pause_clock()
    try:
        signature = str(await send(system, payer, PRICE // 2, (created["reference"],)))
        await system.solana.admin.advance(1)
        view = await wait_view(system, payment_id, "seen_signature", signature)
        assert view["status"] == "pending"
        await system.solana.finalize()
    finally:
        await system.solana.admin.resume_clock()
    view = await wait_view(system, payment_id, "seen_outcome", "counted")
    assert view["status"] == "pending"
    assert view["received_lamports"] == str(PRICE // 2)
    assert view["tx_signature"] is None
    assert await entitlements(system) == 0


async def test_forged_seen_markers_move_no_status_and_fulfil_nothing(
    payment_system: PaymentSystem,
) -> None:
    system = payment_system
    payer = await system.payer()
    created = await system.create()
    payment_id = created["payment_id"]

    # A signature no chain has: shown, then not finalized once the verifier gives up on it.
    invented = str(Signature.from_bytes(secrets.token_bytes(64)))
    await forge(system, payment_id, invented)
    view = await wait_view(system, payment_id, "seen_signature", invented)
    assert view["status"] == "pending"
    view = await wait_view(system, payment_id, "seen_outcome", "not_finalized", timeout=20)
    assert view["status"] == "pending"
    assert view["received_lamports"] == "0"

    # A real finalized transaction with the reference that pays someone else.
    elsewhere = str(
        await system.send(payer, PRICE, (created["reference"],), recipient=str(Keypair().pubkey()))
    )
    await wait_observation(system, elsewhere, "no_credit")
    await forge(system, payment_id, elsewhere)
    view = await wait_view(system, payment_id, "seen_signature", elsewhere)
    view = await wait_view(system, payment_id, "seen_outcome", "not_a_receipt", timeout=20)
    assert view["status"] == "pending"
    assert view["received_lamports"] == "0"
    assert await entitlements(system) == 0

    # On a payment that is done, a marker changes nothing at all (not even a version).
    paid = await system.create()
    await system.send(payer, PRICE, (paid["reference"],))
    done = await system.wait_status(paid["payment_id"], "provisioned")
    await forge(system, paid["payment_id"], invented)
    await asyncio.sleep(1.0)
    after = await system.status(paid["payment_id"])
    assert after["version"] == done["version"]
    assert after["seen_signature"] == done["seen_signature"]
    assert await entitlements(system) == 1

    # Every status event of the attacked payment says pending: no marker moved it.
    events = await status_events(system, payment_id)
    assert {str(e.payment.status) for e in events} == {"pending"}
