"""Helius-compatible webhooks: a registry (`/v0/webhooks`) and a dispatcher that POSTs batches
of the transactions touching registered addresses once they reach the configured commitment.

Delivery is at-most-a-few-times, as with Helius: a few retries with backoff on a non-2xx
answer or a connection error, then the batch is dropped. Receivers must reconcile by polling.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from solders.pubkey import Pubkey

from axiom_shared.logging import get_logger
from sandbox.solana.chain import MEMO_PROGRAM_IDS, Chain, Commitment, TxRecord
from sandbox.solana.config import SandboxConfig
from sandbox.solana.encoding import (
    Json,
    b58encode,
    confirmed_transaction_json,
    decode_system_transfer,
    error_json,
    inner_instructions_json,
)
from sandbox.solana.faults import FaultInjector

log = get_logger(__name__)

WEBHOOK_TYPES = ("enhanced", "raw", "enhancedDevnet", "rawDevnet")
COMPUTE_BUDGET_PROGRAM_ID = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
LAMPORTS_PER_SOL = Decimal(1_000_000_000)


class WebhookValidationError(ValueError):
    pass


@dataclass
class Webhook:
    webhook_id: str
    webhook_url: str
    account_addresses: list[str]
    webhook_type: str
    auth_header: str | None
    transaction_types: list[str]
    wallet: str

    @property
    def addresses(self) -> set[Pubkey]:
        return {Pubkey.from_string(address) for address in self.account_addresses}

    @property
    def enhanced(self) -> bool:
        return self.webhook_type.startswith("enhanced")

    def to_json(self) -> Json:
        return {
            "webhookID": self.webhook_id,
            "wallet": self.wallet,
            "webhookURL": self.webhook_url,
            "transactionTypes": self.transaction_types,
            "accountAddresses": self.account_addresses,
            "webhookType": self.webhook_type,
            "authHeader": self.auth_header,
        }

    @classmethod
    def from_body(cls, body: Json, webhook_id: str | None = None) -> Webhook:
        if not isinstance(body, dict):
            raise WebhookValidationError("body must be a JSON object")
        url = body.get("webhookURL")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise WebhookValidationError("webhookURL must be an http(s) URL")
        addresses = body.get("accountAddresses", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise WebhookValidationError("accountAddresses must be a list of addresses")
        for address in addresses:
            try:
                Pubkey.from_string(address)
            except ValueError as exc:
                raise WebhookValidationError(f"invalid account address {address!r}") from exc
        webhook_type = body.get("webhookType", "enhanced")
        if webhook_type not in WEBHOOK_TYPES:
            raise WebhookValidationError(f"webhookType must be one of {', '.join(WEBHOOK_TYPES)}")
        auth_header = body.get("authHeader")
        if auth_header is not None and not isinstance(auth_header, str):
            raise WebhookValidationError("authHeader must be a string")
        types = body.get("transactionTypes", ["ANY"])
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise WebhookValidationError("transactionTypes must be a list of strings")
        return cls(
            webhook_id=webhook_id or str(uuid.uuid4()),
            webhook_url=url,
            account_addresses=list(addresses),
            webhook_type=webhook_type,
            auth_header=auth_header,
            transaction_types=[t.upper() for t in types] or ["ANY"],
            wallet=str(body.get("wallet", "")),
        )

    def wants(self, record: TxRecord, tx_type: str) -> bool:
        if self.enhanced and record.err is not None:
            return False  # enhanced webhooks never carry failed transactions
        if "ANY" not in self.transaction_types and tx_type not in self.transaction_types:
            return False
        return not self.addresses.isdisjoint(record.account_keys)


@dataclass
class DeliveryStats:
    batches_sent: int = 0
    batches_dropped: int = 0
    batches_failed: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    items_sent: int = 0

    def to_json(self) -> Json:
        return {
            "webhooks_sent": self.batches_sent,
            "webhooks_dropped": self.batches_dropped,
            "webhooks_failed": self.batches_failed,
            "webhook_attempts": self.attempts,
            "webhook_failed_attempts": self.failed_attempts,
            "webhook_items_sent": self.items_sent,
        }


@dataclass
class _Batch:
    webhook: Webhook
    items: list[Json]
    held_since: float = 0.0
    signatures: list[str] = field(default_factory=list)


class WebhookDispatcher:
    def __init__(self, chain: Chain, config: SandboxConfig, faults: FaultInjector) -> None:
        self.chain = chain
        self.config = config
        self.faults = faults
        self.webhooks: dict[str, Webhook] = {}
        self.stats = DeliveryStats()
        self.commitment = Commitment(config.webhook_commitment)
        self._notified_through = chain.commitment_slot(self.commitment)
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[_Batch] = []
        self._release_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        if self.commitment is Commitment.PROCESSED:
            chain.on_transaction(lambda record: self._dispatch([record]))
        else:
            chain.on_slot(self._on_slot)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout)
        )

    async def close(self) -> None:
        if self._release_task is not None:
            self._release_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._release_task is not None:
            await asyncio.gather(self._release_task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def idle(self) -> None:
        """Wait until every delivery under way has finished (tests use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- registry ------------------------------------------------------------------------------

    def register(self, webhook: Webhook) -> Webhook:
        self.webhooks[webhook.webhook_id] = webhook
        log.info(
            "webhook_registered",
            webhook_id=webhook.webhook_id,
            url=webhook.webhook_url,
            type=webhook.webhook_type,
            addresses=len(webhook.account_addresses),
        )
        return webhook

    # --- dispatch ------------------------------------------------------------------------------

    def _on_slot(self, old_slot: int, new_slot: int) -> None:
        reached = self.chain.commitment_slot(self.commitment)
        if reached <= self._notified_through:
            return
        records = self.chain.records_in_slots(self._notified_through + 1, reached)
        self._notified_through = reached
        if records:
            self._dispatch(records)

    def _dispatch(self, records: list[TxRecord]) -> None:
        if not self.webhooks or self._session is None:
            return
        for webhook in list(self.webhooks.values()):
            items: list[Json] = []
            signatures: list[str] = []
            for record in records:
                tx_type = transaction_type(record)
                if webhook.wants(record, tx_type):
                    items.append(
                        enhanced_item(record, tx_type) if webhook.enhanced else raw_item(record)
                    )
                    signatures.append(str(record.signature))
            if items:
                self._enqueue(_Batch(webhook=webhook, items=items, signatures=signatures))

    def _enqueue(self, batch: _Batch) -> None:
        settings = self.faults.settings
        if self.faults.drop_webhook():
            self.stats.batches_dropped += 1
            log.info("webhook_dropped_by_fault", webhook_id=batch.webhook.webhook_id)
            return
        if settings.webhook_reorder:
            self.faults.rng.shuffle(batch.items)
            batch.held_since = asyncio.get_running_loop().time()
            self._held.append(batch)
            if len(self._held) >= settings.webhook_reorder_window:
                self._release_held()
            elif self._release_task is None or self._release_task.done():
                self._release_task = asyncio.create_task(self._release_later())
            return
        self._spawn(batch)

    async def _release_later(self) -> None:
        await asyncio.sleep(self.faults.settings.webhook_reorder_max_hold_seconds)
        self._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held, []
        # Newest first: the receiver sees later events before earlier ones.
        for batch in reversed(held):
            self._spawn(batch)

    def flush_held(self) -> None:
        self._release_held()

    def _spawn(self, batch: _Batch) -> None:
        copies = self.faults.settings.webhook_duplicate
        for _ in range(copies):
            task = asyncio.create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, batch: _Batch) -> None:
        delay = self.faults.settings.webhook_delay_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if batch.webhook.auth_header:
            headers["Authorization"] = batch.webhook.auth_header
        backoff = self.config.webhook_retry_backoff
        for attempt in range(1, self.config.webhook_max_attempts + 1):
            self.stats.attempts += 1
            try:
                async with self._session.post(
                    batch.webhook.webhook_url, json=batch.items, headers=headers
                ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self.stats.batches_sent += 1
                        self.stats.items_sent += len(batch.items)
                        log.info(
                            "webhook_delivered",
                            webhook_id=batch.webhook.webhook_id,
                            attempt=attempt,
                            signatures=batch.signatures,
                        )
                        return
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.stats.failed_attempts += 1
            log.info(
                "webhook_attempt_failed",
                webhook_id=batch.webhook.webhook_id,
                attempt=attempt,
                reason=reason,
            )
            if attempt < self.config.webhook_max_attempts:
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
        self.stats.batches_failed += 1
        log.warning(
            "webhook_given_up",
            webhook_id=batch.webhook.webhook_id,
            signatures=batch.signatures,
        )


# --- payload formats ------------------------------------------------------------------------


def _instructions(record: TxRecord) -> list[tuple[Pubkey, list[Pubkey], bytes]]:
    keys = record.account_keys
    return [
        (keys[ix.program_id_index], [keys[i] for i in bytes(ix.accounts)], bytes(ix.data))
        for ix in record.transaction.message.instructions
    ]


def native_transfers(record: TxRecord) -> list[tuple[Pubkey, Pubkey, int]]:
    keys = record.account_keys
    transfers = []
    for program_id, accounts, data in _instructions(record):
        found = decode_system_transfer(program_id, accounts, data)
        if found is not None:
            transfers.append(found)
    for group in record.inner_instructions:
        for inner in group:
            ix = inner.instruction()
            found = decode_system_transfer(
                keys[ix.program_id_index], [keys[i] for i in bytes(ix.accounts)], bytes(ix.data)
            )
            if found is not None:
                transfers.append(found)
    return transfers


def transaction_type(record: TxRecord) -> str:
    """TRANSFER when every instruction that does something is a System transfer."""
    meaningful = [
        (program_id, accounts, data)
        for program_id, accounts, data in _instructions(record)
        if program_id not in MEMO_PROGRAM_IDS and program_id != COMPUTE_BUDGET_PROGRAM_ID
    ]
    if meaningful and all(decode_system_transfer(*ix) is not None for ix in meaningful):
        return "TRANSFER"
    return "UNKNOWN"


def _sol(lamports: int) -> str:
    return format((Decimal(lamports) / LAMPORTS_PER_SOL).normalize(), "f")


def enhanced_item(record: TxRecord, tx_type: str) -> Json:
    transfers = native_transfers(record)
    keys = record.account_keys
    fee_payer = str(keys[0])
    if tx_type == "TRANSFER" and transfers:
        description = " ".join(
            f"{source} transferred {_sol(lamports)} SOL to {destination}."
            for source, destination, lamports in transfers
        )
        source_name = "SYSTEM_PROGRAM"
    else:
        description = ""
        source_name = "UNKNOWN"
    inner_by_index: dict[int, Json] = {
        entry["index"]: entry["instructions"]
        for entry in inner_instructions_json(record.inner_instructions)
    }
    instructions: list[Json] = []
    for index, (program_id, accounts, data) in enumerate(_instructions(record)):
        inner_items = []
        for inner in inner_by_index.get(index, []):
            inner_items.append(
                {
                    "accounts": [str(keys[i]) for i in inner["accounts"]],
                    "data": inner["data"],
                    "programId": str(keys[inner["programIdIndex"]]),
                }
            )
        instructions.append(
            {
                "accounts": [str(key) for key in accounts],
                "data": b58encode(data),
                "programId": str(program_id),
                "innerInstructions": inner_items,
            }
        )
    item: dict[str, Any] = {
        "description": description,
        "type": tx_type,
        "source": source_name,
        "fee": record.fee,
        "feePayer": fee_payer,
        "signature": str(record.signature),
        "slot": record.slot,
        "timestamp": record.block_time,
        "tokenTransfers": [],
        "nativeTransfers": [
            {
                "fromUserAccount": str(source),
                "toUserAccount": str(destination),
                "amount": lamports,
            }
            for source, destination, lamports in transfers
        ],
        "accountData": [
            {
                "account": str(key),
                "nativeBalanceChange": post - pre,
                "tokenBalanceChanges": [],
            }
            for key, pre, post in zip(keys, record.pre_balances, record.post_balances, strict=True)
        ],
        "transactionError": error_json(record.err),
        "instructions": instructions,
        "events": {},
    }
    return item


def raw_item(record: TxRecord) -> Json:
    item = confirmed_transaction_json(record, "json", include_version=True)
    item["indexWithinBlock"] = record.index_within_block
    return item
