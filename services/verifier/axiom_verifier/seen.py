"""The `confirmed` watch: tells the buyer within a second that their payment was seen.

One PubSub subscription per replica (`logsSubscribe` mentioning the merchant wallet, at
`confirmed`) rather than one per payment: every payment's transaction credits that wallet.
Each transaction announced without an error is read at `confirmed`, matched to our payments
by its account keys and judged by the receipt rules (`rules.judge`); one that would be a
receipt of a payable payment becomes a `PaymentSeen` marker.

The marker is display only. `confirmed` can still be rolled back, so nothing is decided or
counted here: the payments service shows it and has the signature read again at `finalized`
(the candidate path), which alone can make a receipt. The watch is best effort: when the
socket is down, payments are still found at `finalized` by webhooks and the reconcile loop;
only the early news is missing. Replicas publish the same marker once (`Nats-Msg-Id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from nats.js import JetStreamContext

from axiom_shared.logging import get_logger
from axiom_shared.nats import publish_event
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import PaymentSeen, PaymentStatus
from axiom_shared.solana_rpc import FinalizedTransaction, RpcUnavailable, SolanaRpc
from axiom_shared.topology import SEEN_SUBJECT
from axiom_verifier.rules import judge

log = get_logger(__name__)

#: Statuses a payment can still be paid in (an expired one can be completed late).
PAYABLE = frozenset({PaymentStatus.PENDING, PaymentStatus.EXPIRED})
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Transactions being looked at once; beyond that, news of more is dropped (best effort).
MAX_IN_HAND = 256
#: A node may announce a transaction a moment before it answers getTransaction for it.
READ_ATTEMPTS = 5
READ_RETRY = 0.1


class SeenWatch:
    def __init__(
        self,
        ws_url: str,
        merchant_wallet: str,
        rpc: SolanaRpc,
        payments: PaymentsClient,
        js: JetStreamContext,
        *,
        clock_skew: timedelta,
    ) -> None:
        self._url = ws_url
        self._merchant = merchant_wallet
        self._rpc = rpc
        self._payments = payments
        self._js = js
        self._skew = clock_skew
        self._task: asyncio.Task[None] | None = None
        self._in_hand: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="seen-watch")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._in_hand) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.ws_connect(self._url, heartbeat=20.0) as ws:
                        await ws.send_json(
                            {
                                "jsonrpc": "2.0",
                                "id": 1,
                                "method": "logsSubscribe",
                                "params": [
                                    {"mentions": [self._merchant]},
                                    {"commitment": "confirmed"},
                                ],
                            }
                        )
                        async for message in ws:
                            if message.type is not aiohttp.WSMsgType.TEXT:
                                break
                            attempt = 0
                            self._on_message(message.data)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("seen watch disconnected", error=type(exc).__name__)
                except Exception as exc:  # the watch must outlive any surprise
                    log.warning("seen watch failed", error=repr(exc)[:200])
                self.subscribed.clear()
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                attempt += 1

    def _on_message(self, text: str) -> None:
        try:
            message: Any = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("id") == 1 and "result" in message:
            self.subscribed.set()
            log.info("seen watch subscribed", merchant=self._merchant)
            return
        if message.get("method") != "logsNotification":
            return
        try:
            result = message["params"]["result"]
            value, slot = result["value"], int(result["context"]["slot"])
            signature = str(value["signature"])
        except (KeyError, TypeError, ValueError):
            return
        if value.get("err") is not None or len(self._in_hand) >= MAX_IN_HAND:
            return  # a failed transaction pays nothing; too much at once: news dropped
        task = asyncio.create_task(self._seen(signature, slot))
        self._in_hand.add(task)
        task.add_done_callback(self._in_hand.discard)

    async def _seen(self, signature: str, slot: int) -> None:
        seen_at = datetime.now(UTC)
        try:
            tx = await self._read(signature)
            if tx is None:
                return
            ours = await self._payments.match(list(dict.fromkeys(tx.account_keys))[:256])
            # The block time at `confirmed` may be missing: the age rule then uses now.
            block_time = datetime.fromtimestamp(tx.block_time, UTC) if tx.block_time else seen_at
            for payment in ours.payments:
                if payment.status not in PAYABLE:
                    continue
                others = sum(1 for p in ours.payments if p.payment_id != payment.payment_id)
                judgement = judge(
                    payment,
                    tx,
                    block_time=block_time,
                    other_references=others,
                    clock_skew=self._skew,
                )
                if judgement is None or judgement.reason is not None:
                    continue  # would not be a receipt: not news for the buyer
                await publish_event(
                    self._js,
                    SEEN_SUBJECT.format(payment_id=payment.payment_id),
                    PaymentSeen(
                        payment_id=payment.payment_id,
                        signature=signature,
                        slot=slot,
                        seen_at=seen_at,
                    ),
                    msg_id=f"seen:{payment.payment_id}:{signature}",
                )
        except Exception as exc:
            log.warning("seen transaction not handled", signature=signature, error=repr(exc)[:200])

    async def _read(self, signature: str) -> FinalizedTransaction | None:
        for _ in range(READ_ATTEMPTS):
            try:
                tx = await self._rpc.transaction(signature, "confirmed")
            except RpcUnavailable:
                tx = None
            if tx is not None:
                return tx
            await asyncio.sleep(READ_RETRY)
        return None
