"""The chain: LiteSVM executes and signature-checks; this module adds what a validator has and
LiteSVM lacks: slots on a clock, one blockhash per slot with an age limit, commitment levels,
a ledger of landed transactions, per-address signature index, and account history so that a
query at `finalized` sees the state as of the finalized slot, not the newest one.

Everything here is synchronous and runs on the event loop's thread, so no locking is needed.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from solders.account import Account
from solders.address_lookup_table_account import AddressLookupTable
from solders.clock import Clock
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0, MessageV1
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import (
    FailedTransactionMetadata,
    InnerInstruction,
    SimulatedTransactionInfo,
    TransactionMetadata,
)
from solders.transaction_status import TransactionErrorFieldless, TransactionErrorType

from sandbox.solana.config import SandboxConfig
from sandbox.solana.tokens import (
    SANDBOX_USDC_DECIMALS,
    SANDBOX_USDC_MINT,
    TokenBalance,
    create_ata_idempotent,
    mint_account,
    mint_decimals,
    mint_to,
    token_account,
)

LAMPORTS_PER_SIGNATURE = 5000
MEMO_PROGRAM_IDS = frozenset(
    {
        Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"),
        Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"),
    }
)


AnyMessage = Message | MessageV0 | MessageV1


class Commitment(StrEnum):
    PROCESSED = "processed"
    CONFIRMED = "confirmed"
    FINALIZED = "finalized"

    @classmethod
    def parse(cls, value: object, default: Commitment) -> Commitment:
        """Accept the current names and the deprecated aliases real nodes still map."""
        if value is None:
            return default
        aliases = {"recent": "processed", "single": "confirmed", "singleGossip": "confirmed",
                   "max": "finalized", "root": "finalized"}  # fmt: skip
        if not isinstance(value, str):
            raise ValueError("commitment must be a string")
        return cls(aliases.get(value, value))


class TransactionRejected(Exception):
    """The transaction did not land (nothing was committed, no fee was charged)."""

    def __init__(self, err: TransactionErrorType, logs: list[str] | None = None) -> None:
        super().__init__(str(err))
        self.err = err
        self.logs = logs or []


@dataclass(frozen=True)
class LoadedAddresses:
    writable: list[Pubkey] = field(default_factory=list)
    readonly: list[Pubkey] = field(default_factory=list)


@dataclass
class Block:
    slot: int
    blockhash: Hash
    block_time: int
    signatures: list[Signature] = field(default_factory=list)


@dataclass(frozen=True)
class TxRecord:
    """A landed transaction (succeeded or failed with its fee charged), as the ledger keeps it."""

    signature: Signature
    slot: int
    index_within_block: int
    block_time: int
    transaction: VersionedTransaction
    err: TransactionErrorType | None
    fee: int
    pre_balances: list[int]
    post_balances: list[int]
    logs: list[str]
    inner_instructions: list[list[InnerInstruction]]
    compute_units: int
    loaded: LoadedAddresses
    memo: str | None
    #: The accounts this transaction changed (fee payer included), for account subscriptions.
    written_accounts: tuple[Pubkey, ...] = ()
    #: Token accounts among its keys, before and after (`meta.pre/postTokenBalances`).
    pre_token_balances: tuple[TokenBalance, ...] = ()
    post_token_balances: tuple[TokenBalance, ...] = ()

    @property
    def account_keys(self) -> list[Pubkey]:
        """Static keys then loaded writable then loaded read-only: the order of pre/postBalances."""
        return [
            *self.transaction.message.account_keys,
            *self.loaded.writable,
            *self.loaded.readonly,
        ]


@dataclass(frozen=True)
class SimulationResult:
    err: TransactionErrorType | None
    logs: list[str]
    units_consumed: int
    fee: int
    inner_instructions: list[list[InnerInstruction]]
    return_data: tuple[Pubkey, bytes] | None
    post_accounts: dict[Pubkey, Account]
    pre_balances: list[int]
    post_balances: list[int]
    loaded: LoadedAddresses


SlotListener = Callable[[int, int], None]
TransactionListener = Callable[[TxRecord], None]


class Chain:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        # LiteSVM's own blockhash check only knows the newest hash, and its sigverify cannot be
        # skipped per call; the sandbox does both itself, the way a validator does.
        self.svm = LiteSVM().with_blockhash_check(False).with_sigverify(False)
        self.svm = self.svm.with_transaction_history(0)
        self.faucet = Keypair()
        self.svm.set_account(
            self.faucet.pubkey(), Account(config.faucet_lamports, b"", SYSTEM_PROGRAM_ID)
        )
        self.slot = 0
        self.blocks: dict[int, Block] = {}
        self._blockhash_slot: dict[Hash, int] = {}
        self._txs: dict[Signature, TxRecord] = {}
        self._by_address: dict[Pubkey, list[TxRecord]] = {}
        # Per account: (slot, account-after-that-slot) in slot order; the first entry, at
        # slot -1, is the state before any recorded change.
        self._history: dict[Pubkey, list[tuple[int, Account | None]]] = {}
        self._slot_listeners: list[SlotListener] = []
        self._tx_listeners: list[TransactionListener] = []
        self.tx_count = 0
        # The test USDC mint, its authority the faucet: tokens are minted by real MintTo
        # transactions (`mint_tokens`).
        self.svm.set_account(
            SANDBOX_USDC_MINT,
            mint_account(
                self.faucet.pubkey(),
                SANDBOX_USDC_DECIMALS,
                self.svm.minimum_balance_for_rent_exemption(82),
            ),
        )
        self._open_block(0)
        # Start with every commitment level on a real, empty slot (finalized >= 1).
        self.advance(config.finality_depth + 1)

    # --- slots and commitment -------------------------------------------------------------

    def on_slot(self, listener: SlotListener) -> None:
        self._slot_listeners.append(listener)

    def on_transaction(self, listener: TransactionListener) -> None:
        self._tx_listeners.append(listener)

    def _open_block(self, slot: int) -> None:
        if slot > 0:
            self.svm.expire_blockhash()
        previous = self.blocks.get(slot - 1)
        now = int(time.time())
        block_time = max(now, previous.block_time) if previous else now
        blockhash = self.svm.latest_blockhash()
        self.blocks[slot] = Block(slot=slot, blockhash=blockhash, block_time=block_time)
        self._blockhash_slot[blockhash] = slot
        self.svm.set_clock(Clock(slot, block_time, 0, 0, block_time))

    def advance(self, slots: int = 1) -> int:
        """Produce `slots` new slots; listeners hear (old_slot, new_slot) once."""
        old = self.slot
        for _ in range(max(0, slots)):
            self.slot += 1
            self._open_block(self.slot)
        if self.slot != old:
            for listener in list(self._slot_listeners):
                listener(old, self.slot)
        return self.slot

    def commitment_slot(self, commitment: Commitment, at_slot: int | None = None) -> int:
        current = self.slot if at_slot is None else at_slot
        if commitment is Commitment.PROCESSED:
            return current
        depth = (
            self.config.confirmation_depth
            if commitment is Commitment.CONFIRMED
            else self.config.finality_depth
        )
        return max(0, current - depth)

    def is_visible(self, record: TxRecord, commitment: Commitment) -> bool:
        return record.slot <= self.commitment_slot(commitment)

    def confirmation_status(self, record: TxRecord) -> Commitment:
        if self.is_visible(record, Commitment.FINALIZED):
            return Commitment.FINALIZED
        if self.is_visible(record, Commitment.CONFIRMED):
            return Commitment.CONFIRMED
        return Commitment.PROCESSED

    def block_at(self, commitment: Commitment) -> Block:
        return self.blocks[self.commitment_slot(commitment)]

    def last_valid_block_height(self, blockhash: Hash) -> int | None:
        slot = self._blockhash_slot.get(blockhash)
        return None if slot is None else slot + self.config.blockhash_max_age

    def blockhash_is_valid(self, blockhash: Hash, commitment: Commitment) -> bool:
        """As the bank at `commitment` sees it: known to that bank and not too old for it."""
        slot = self._blockhash_slot.get(blockhash)
        bank_slot = self.commitment_slot(commitment)
        if slot is None or slot > bank_slot:
            return False
        return bank_slot - slot <= self.config.blockhash_max_age

    # --- accounts ---------------------------------------------------------------------------

    def account(self, address: Pubkey, commitment: Commitment) -> Account | None:
        history = self._history.get(address)
        if history is None:
            return _live(self.svm.get_account(address))
        slot = self.commitment_slot(commitment)
        position = bisect.bisect_right(history, slot, key=lambda entry: entry[0])
        return history[max(0, position - 1)][1]

    def balance(self, address: Pubkey, commitment: Commitment) -> int:
        account = self.account(address, commitment)
        return 0 if account is None else account.lamports

    def minimum_balance_for_rent_exemption(self, data_len: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(data_len)

    # --- transactions -----------------------------------------------------------------------

    def transaction(self, signature: Signature) -> TxRecord | None:
        return self._txs.get(signature)

    def history_for(self, address: Pubkey) -> list[TxRecord]:
        """Every landed transaction that names `address`, oldest first."""
        return list(self._by_address.get(address, ()))

    def records_in_slots(self, first: int, last: int) -> list[TxRecord]:
        records: list[TxRecord] = []
        for slot in range(max(0, first), last + 1):
            block = self.blocks.get(slot)
            if block is not None:
                records.extend(self._txs[sig] for sig in block.signatures)
        return records

    def resolve_lookups(self, message: AnyMessage) -> LoadedAddresses:
        if not isinstance(message, MessageV0):
            return LoadedAddresses()
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lookup in message.address_table_lookups:
            account = self.svm.get_account(lookup.account_key)
            if account is None or account.lamports == 0:
                raise TransactionRejected(TransactionErrorFieldless.AddressLookupTableNotFound)
            try:
                addresses = AddressLookupTable.deserialize(bytes(account.data)).addresses
                writable.extend(addresses[i] for i in lookup.writable_indexes)
                readonly.extend(addresses[i] for i in lookup.readonly_indexes)
            except (ValueError, IndexError) as exc:
                raise TransactionRejected(
                    TransactionErrorFieldless.InvalidAddressLookupTableIndex
                ) from exc
        return LoadedAddresses(writable, readonly)

    def check_age(self, tx: VersionedTransaction, commitment: Commitment) -> None:
        if not self.blockhash_is_valid(tx.message.recent_blockhash, commitment):
            raise TransactionRejected(TransactionErrorFieldless.BlockhashNotFound)

    def simulate(
        self,
        tx: VersionedTransaction,
        commitment: Commitment = Commitment.PROCESSED,
        *,
        check_blockhash: bool = True,
    ) -> SimulationResult:
        """Run without committing. Raises TransactionRejected for what fails before execution."""
        if check_blockhash:
            self.check_age(tx, commitment)
        if tx.signatures and tx.signatures[0] in self._txs:
            raise TransactionRejected(TransactionErrorFieldless.AlreadyProcessed)
        loaded = self.resolve_lookups(tx.message)
        keys = [*tx.message.account_keys, *loaded.writable, *loaded.readonly]
        pre = [self.svm.get_account(key) for key in keys]
        result = self.svm.simulate_transaction(tx)
        if isinstance(result, SimulatedTransactionInfo):
            meta, err = result.meta(), None
            post_accounts = dict(result.post_accounts())
        else:
            meta, err = result.meta(), result.err()
            post_accounts = {}
        pre_balances = [_lamports(account) for account in pre]
        post_balances = [
            post_accounts[key].lamports if key in post_accounts else pre_balances[i]
            for i, key in enumerate(keys)
        ]
        return_data = meta.return_data()
        return SimulationResult(
            err=err,
            logs=list(meta.logs()),
            units_consumed=meta.compute_units_consumed(),
            fee=meta.fee(),
            inner_instructions=meta.inner_instructions(),
            return_data=(return_data.program_id, bytes(return_data.data))
            if return_data.data
            else None,
            post_accounts=post_accounts,
            pre_balances=pre_balances,
            post_balances=post_balances,
            loaded=loaded,
        )

    def process(self, tx: VersionedTransaction) -> TxRecord:
        """Execute in the current slot, as the leader does: the blockhash must be within the
        age limit of the current slot. A transaction that fails while executing still lands
        (fee charged, err recorded); one that fails before that raises TransactionRejected."""
        signature = tx.signatures[0]
        if signature in self._txs:
            raise TransactionRejected(TransactionErrorFieldless.AlreadyProcessed)
        self.check_age(tx, Commitment.PROCESSED)
        loaded = self.resolve_lookups(tx.message)
        keys = [*tx.message.account_keys, *loaded.writable, *loaded.readonly]
        pre = [_live(self.svm.get_account(key)) for key in keys]
        result = self.svm.send_transaction(tx)
        post = [_live(self.svm.get_account(key)) for key in keys]
        meta: TransactionMetadata
        err: TransactionErrorType | None
        if isinstance(result, FailedTransactionMetadata):
            meta, err = result.meta(), result.err()
            if pre[0] == post[0]:
                # Nothing committed, not even the fee: the transaction never lands.
                raise TransactionRejected(err, list(meta.logs()))
        else:
            meta, err = result, None
        block = self.blocks[self.slot]
        record = TxRecord(
            signature=signature,
            slot=self.slot,
            index_within_block=len(block.signatures),
            block_time=block.block_time,
            transaction=tx,
            err=err,
            fee=meta.fee(),
            pre_balances=[_lamports(account) for account in pre],
            post_balances=[_lamports(account) for account in post],
            logs=list(meta.logs()),
            inner_instructions=meta.inner_instructions(),
            compute_units=meta.compute_units_consumed(),
            loaded=loaded,
            memo=extract_memo(tx),
            written_accounts=tuple(
                key for key, before, after in zip(keys, pre, post, strict=True) if before != after
            ),
            pre_token_balances=self._token_balances(pre),
            post_token_balances=self._token_balances(post),
        )
        self._commit(record, keys, pre, post)
        return record

    def _commit(
        self,
        record: TxRecord,
        keys: list[Pubkey],
        pre: list[Account | None],
        post: list[Account | None],
    ) -> None:
        self._txs[record.signature] = record
        self.blocks[record.slot].signatures.append(record.signature)
        self.tx_count += 1
        for key, before, after in zip(keys, pre, post, strict=True):
            index = self._by_address.setdefault(key, [])
            if not index or index[-1] is not record:
                index.append(record)
            if before != after:
                history = self._history.setdefault(key, [(-1, before)])
                if history[-1][0] == record.slot:
                    history[-1] = (record.slot, after)
                else:
                    history.append((record.slot, after))
        for listener in list(self._tx_listeners):
            listener(record)

    def _token_balances(self, accounts: list[Account | None]) -> tuple[TokenBalance, ...]:
        balances = []
        for index, account in enumerate(accounts):
            state = token_account(account)
            if state is None:
                continue
            decimals = mint_decimals(self.svm.get_account(state.mint))
            balances.append(
                TokenBalance(index, state.mint, state.owner, state.amount, decimals or 0)
            )
        return tuple(balances)

    def create_mint(self, decimals: int) -> Pubkey:
        """Another token mint (e.g. a look-alike of the test USDC), the faucet its authority."""
        address = Keypair().pubkey()
        rent = self.svm.minimum_balance_for_rent_exemption(82)
        self.svm.set_account(address, mint_account(self.faucet.pubkey(), decimals, rent))
        return address

    def mint_tokens(self, owner: Pubkey, amount: int, mint: Pubkey = SANDBOX_USDC_MINT) -> TxRecord:
        """Mint test tokens to `owner`'s associated token account (created when missing), in a
        real transaction signed by the faucet (the mint's authority)."""
        message = Message.new_with_blockhash(
            [
                create_ata_idempotent(self.faucet.pubkey(), owner, mint),
                mint_to(mint, owner, self.faucet.pubkey(), amount),
            ],
            self.faucet.pubkey(),
            self.blocks[self.slot].blockhash,
        )
        return self.process(VersionedTransaction(message, [self.faucet]))

    def airdrop(self, recipient: Pubkey, lamports: int) -> TxRecord:
        """A real transfer from the faucet, so it shows up like any other transaction."""
        ix = transfer(
            TransferParams(from_pubkey=self.faucet.pubkey(), to_pubkey=recipient, lamports=lamports)
        )
        message = Message.new_with_blockhash(
            [ix], self.faucet.pubkey(), self.blocks[self.slot].blockhash
        )
        return self.process(VersionedTransaction(message, [self.faucet]))

    def fee_for_message(self, message: AnyMessage) -> int:
        return LAMPORTS_PER_SIGNATURE * message.header.num_required_signatures


def _live(account: Account | None) -> Account | None:
    """A validator reports a zero-lamport account as absent."""
    if account is None or account.lamports == 0:
        return None
    return account


def _lamports(account: Account | None) -> int:
    return 0 if account is None else account.lamports


def extract_memo(tx: VersionedTransaction) -> str | None:
    """The `memo` field of getSignaturesForAddress: "[len] text" per memo, joined by "; "."""
    keys = tx.message.account_keys
    memos: list[str] = []
    for ix in tx.message.instructions:
        if ix.program_id_index < len(keys) and keys[ix.program_id_index] in MEMO_PROGRAM_IDS:
            data = bytes(ix.data)
            memos.append(f"[{len(data)}] {data.decode('utf-8', errors='replace')}")
    return "; ".join(memos) if memos else None


def is_writable(message: AnyMessage, index: int, loaded: LoadedAddresses) -> bool:
    header = message.header
    static = len(message.account_keys)
    if index >= static:
        return index - static < len(loaded.writable)
    signers = header.num_required_signatures
    if index < signers:
        return index < signers - header.num_readonly_signed_accounts
    return index - signers < static - signers - header.num_readonly_unsigned_accounts
