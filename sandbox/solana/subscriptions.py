"""PubSub subscriptions: who wants to hear what, at which commitment, and the notifications
the chain's events become, in a validator's shapes.

The registry hangs off the chain's two events: a transaction landing (the `processed`
level, as the sandbox's processed bank sees it at once) and slots advancing (a new slot, the
`confirmed` and `finalized` levels catching up, a new root). Like the chain it is
synchronous and runs on the event loop's thread. It never awaits a socket: each
notification is handed to its connection's bounded queue (`NotificationSink.send`, see
pubsub.py), so a slow or vanished client cannot slow the slot clock.

As on a validator: a subscription hears of events from the moment it is made (a
transaction that had already reached the subscription's commitment is not announced; ask
getSignatureStatuses), a signature subscription ends after its one notification, and an
account subscription is told at most once per commitment step, with the account as that
commitment's bank has it.

Where it differs from a validator, on purpose: each subscription has its own id (a validator
shares one among identical subscriptions; clients cope with both); `processed` notifications
go out as each transaction lands, not when its slot's bank completes, because the sandbox's
processed bank shows a transaction at once and notifications must agree with
getSignatureStatuses; "receivedSignature" comes only for transactions that land (the sandbox
has no stage between receiving and executing).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from solders.account import Account
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID

from sandbox.solana.chain import Chain, Commitment, TxRecord
from sandbox.solana.encoding import Json, account_json, error_json

#: A jump of more slots than this at once (the admin's advance) announces only the newest
#: ones to slot and root subscribers: no validator makes slots that fast, and a client could
#: act on none of the rest.
SLOT_BURST_LIMIT = 64


K = TypeVar("K")
S = TypeVar("S", bound="Subscription")


class NotificationSink(Protocol):
    """Where one connection's notifications go. `send` must not block (it queues)."""

    def send(self, text: str) -> None: ...


class AccountEncoding(StrEnum):
    BINARY = "binary"  # the legacy default: data as a bare base-58 string
    BASE58 = "base58"
    BASE64 = "base64"
    JSON_PARSED = "jsonParsed"  # falls back to base64: the sandbox parses no account data


@dataclass(eq=False)
class Subscription:
    sink: NotificationSink
    id: int = -1
    method = ""

    def notify(self, result_json: str) -> None:
        self.sink.send(
            f'{{"jsonrpc":"2.0","method":"{self.method}",'
            f'"params":{{"result":{result_json},"subscription":{self.id}}}}}'
        )


@dataclass(eq=False)
class SignatureSubscription(Subscription):
    signature: Signature = field(default_factory=Signature.default)
    commitment: Commitment = Commitment.FINALIZED
    received_notification: bool = False
    method = "signatureNotification"


@dataclass(eq=False)
class AccountSubscription(Subscription):
    address: Pubkey = field(default_factory=Pubkey.default)
    commitment: Commitment = Commitment.FINALIZED
    encoding: AccountEncoding = AccountEncoding.BINARY
    data_slice: tuple[int, int] | None = None
    method = "accountNotification"


@dataclass(eq=False)
class LogsSubscription(Subscription):
    #: None: every transaction ("all"); otherwise those that name this address.
    mentions: Pubkey | None = None
    commitment: Commitment = Commitment.FINALIZED
    method = "logsNotification"


@dataclass(eq=False)
class SlotSubscription(Subscription):
    method = "slotNotification"


@dataclass(eq=False)
class RootSubscription(Subscription):
    method = "rootNotification"


def _compact(value: Json) -> str:
    return json.dumps(value, separators=(",", ":"))


def _context(slot: int, value: Json) -> str:
    return _compact({"context": {"slot": slot}, "value": value})


def account_value(
    account: Account | None, encoding: AccountEncoding, data_slice: tuple[int, int] | None
) -> Json:
    """UiAccount as a notification carries it; a closed account reads as an empty one owned
    by the System Program, as a validator reports it."""
    closed = account is None
    if account is None:
        account = Account(0, b"", SYSTEM_PROGRAM_ID)
    if encoding is AccountEncoding.BINARY:
        value = account_json(account, "base58", data_slice)
        value["data"] = value["data"][0]
    else:
        value = account_json(account, str(encoding), data_slice)
    if closed:
        value["rentEpoch"] = 0
    return value


class _Watchers(Generic[K, S]):
    """Subscriptions grouped by what they watch (a signature, an address; None for all)."""

    def __init__(self) -> None:
        self._groups: dict[K, dict[int, S]] = {}

    def __bool__(self) -> bool:
        return bool(self._groups)

    def add(self, key: K, subscription: S) -> None:
        self._groups.setdefault(key, {})[subscription.id] = subscription

    def discard(self, key: K, subscription: S) -> None:
        group = self._groups.get(key)
        if group is not None:
            group.pop(subscription.id, None)
            if not group:
                del self._groups[key]

    def get(self, key: K) -> list[S]:
        group = self._groups.get(key)
        return list(group.values()) if group else []


class SubscriptionRegistry:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._ids = itertools.count()
        self._by_id: dict[int, Subscription] = {}
        self._by_sink: dict[NotificationSink, set[int]] = {}
        self._signatures: _Watchers[Signature, SignatureSubscription] = _Watchers()
        self._accounts: dict[Commitment, _Watchers[Pubkey, AccountSubscription]] = {
            commitment: _Watchers() for commitment in Commitment
        }
        self._logs: dict[Commitment, _Watchers[Pubkey | None, LogsSubscription]] = {
            commitment: _Watchers() for commitment in Commitment
        }
        self._slots: _Watchers[None, SlotSubscription] = _Watchers()
        self._roots: _Watchers[None, RootSubscription] = _Watchers()
        # The newest slot each level has been announced through.
        self._reached = {
            Commitment.CONFIRMED: chain.commitment_slot(Commitment.CONFIRMED),
            Commitment.FINALIZED: chain.commitment_slot(Commitment.FINALIZED),
        }
        #: Notifications sent, by method.
        self.sent: Counter[str] = Counter()
        chain.on_transaction(self._on_transaction)
        chain.on_slot(self._on_slot)

    def __len__(self) -> int:
        return len(self._by_id)

    # --- subscribe / unsubscribe -------------------------------------------------------------

    def add(self, subscription: Subscription) -> int:
        subscription.id = next(self._ids)
        self._by_id[subscription.id] = subscription
        self._by_sink.setdefault(subscription.sink, set()).add(subscription.id)
        match subscription:
            case SignatureSubscription():
                self._signatures.add(subscription.signature, subscription)
            case AccountSubscription():
                self._accounts[subscription.commitment].add(subscription.address, subscription)
            case LogsSubscription():
                self._logs[subscription.commitment].add(subscription.mentions, subscription)
            case SlotSubscription():
                self._slots.add(None, subscription)
            case RootSubscription():
                self._roots.add(None, subscription)
        return subscription.id

    def owned_by(self, subscription_id: int, sink: NotificationSink) -> bool:
        subscription = self._by_id.get(subscription_id)
        return subscription is not None and subscription.sink is sink

    def remove(self, subscription_id: int) -> bool:
        subscription = self._by_id.pop(subscription_id, None)
        if subscription is None:
            return False
        owned = self._by_sink.get(subscription.sink)
        if owned is not None:
            owned.discard(subscription_id)
            if not owned:
                del self._by_sink[subscription.sink]
        match subscription:
            case SignatureSubscription():
                self._signatures.discard(subscription.signature, subscription)
            case AccountSubscription():
                self._accounts[subscription.commitment].discard(subscription.address, subscription)
            case LogsSubscription():
                self._logs[subscription.commitment].discard(subscription.mentions, subscription)
            case SlotSubscription():
                self._slots.discard(None, subscription)
            case RootSubscription():
                self._roots.discard(None, subscription)
        return True

    def remove_all(self, sink: NotificationSink) -> int:
        """Everything a closed connection had subscribed to; returns how many."""
        owned = list(self._by_sink.get(sink, ()))
        for subscription_id in owned:
            self.remove(subscription_id)
        return len(owned)

    def catch_up(self, subscription: Subscription) -> None:
        """Run once the subscribe response is on its way: a `processed` signature subscription
        made while its transaction's slot is still the open one hears of it, as it would when
        a validator's bank for that slot completes."""
        if not isinstance(subscription, SignatureSubscription):
            return
        if subscription.commitment is not Commitment.PROCESSED:
            return
        record = self.chain.transaction(subscription.signature)
        if record is not None and record.slot == self.chain.slot:
            self._signature_done(subscription, record)

    # --- chain events ------------------------------------------------------------------------

    def _on_transaction(self, record: TxRecord) -> None:
        for subscription in self._signatures.get(record.signature):
            if subscription.received_notification:
                self._send(subscription, _context(record.slot, "receivedSignature"))
            if subscription.commitment is Commitment.PROCESSED:
                self._signature_done(subscription, record)
        self._notify_logs(Commitment.PROCESSED, [record])
        self._notify_accounts(Commitment.PROCESSED, record.written_accounts, record.slot)

    def _on_slot(self, old_slot: int, new_slot: int) -> None:
        if self._slots:
            for slot in range(max(old_slot + 1, new_slot - SLOT_BURST_LIMIT + 1), new_slot + 1):
                root = self.chain.commitment_slot(Commitment.FINALIZED, slot)
                info = _compact({"parent": slot - 1, "root": root, "slot": slot})
                for slot_subscription in self._slots.get(None):
                    self._send(slot_subscription, info)
        previous_root = self._reached[Commitment.FINALIZED]
        for commitment in (Commitment.CONFIRMED, Commitment.FINALIZED):
            reached = self.chain.commitment_slot(commitment)
            if reached <= self._reached[commitment]:
                continue
            records = self.chain.records_in_slots(self._reached[commitment] + 1, reached)
            self._reached[commitment] = reached
            for record in records:
                for subscription in self._signatures.get(record.signature):
                    if subscription.commitment is commitment:
                        self._signature_done(subscription, record)
            self._notify_logs(commitment, records)
            written = {key for record in records for key in record.written_accounts}
            self._notify_accounts(commitment, written, reached)
        root = self._reached[Commitment.FINALIZED]
        if self._roots and root > previous_root:
            for rooted in range(max(previous_root + 1, root - SLOT_BURST_LIMIT + 1), root + 1):
                for root_subscription in self._roots.get(None):
                    self._send(root_subscription, str(rooted))

    # --- notifications -----------------------------------------------------------------------

    def _send(self, subscription: Subscription, result_json: str) -> None:
        if subscription.id not in self._by_id:
            return  # its connection was dropped earlier in this same event
        subscription.notify(result_json)
        self.sent[subscription.method] += 1

    def _signature_done(self, subscription: SignatureSubscription, record: TxRecord) -> None:
        # The one notification a signature subscription gets; then it is gone, as on a node.
        self._send(subscription, _context(record.slot, {"err": error_json(record.err)}))
        self.remove(subscription.id)

    def _notify_logs(self, commitment: Commitment, records: list[TxRecord]) -> None:
        watchers = self._logs[commitment]
        if not watchers:
            return
        for record in records:
            wanting = watchers.get(None)
            for key in set(record.account_keys):
                wanting.extend(watchers.get(key))
            if not wanting:
                continue
            value = {
                "signature": str(record.signature),
                "err": error_json(record.err),
                "logs": record.logs,
            }
            result = _context(record.slot, value)
            for subscription in wanting:
                self._send(subscription, result)

    def _notify_accounts(
        self, commitment: Commitment, written: Iterable[Pubkey], slot: int
    ) -> None:
        watchers = self._accounts[commitment]
        if not watchers:
            return
        for address in written:
            wanting = watchers.get(address)
            if not wanting:
                continue
            account = self.chain.account(address, commitment)
            rendered: dict[tuple[AccountEncoding, tuple[int, int] | None], str] = {}
            for subscription in wanting:
                key = (subscription.encoding, subscription.data_slice)
                if key not in rendered:
                    rendered[key] = _context(slot, account_value(account, *key))
                self._send(subscription, rendered[key])
