"""SPL tokens (USDC first), written once: program ids, the associated token account (ATA)
of a wallet, the two instructions a Solana Pay token transfer needs, and a token balance as
`getTransaction` reports it (`meta.preTokenBalances` / `postTokenBalances`).

A Solana Pay `recipient` is always a wallet, never a token account (spec): the tokens go to
the wallet's ATA for the mint, created in the same transaction when missing (the
create-idempotent instruction succeeds whether or not it exists).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")
#: Circle's USDC on mainnet-beta (6 decimals): the default `USDC_MINT`.
MAINNET_USDC_MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
USDC_DECIMALS = 6

_TRANSFER_CHECKED = 12
_CREATE_IDEMPOTENT = 1


def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    address, _ = Pubkey.find_program_address(
        [bytes(owner), bytes(TOKEN_PROGRAM_ID), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID
    )
    return address


def create_associated_token_account_idempotent(
    *, funder: Pubkey, owner: Pubkey, mint: Pubkey
) -> Instruction:
    """Create `owner`'s ATA for `mint` (rent paid by `funder`), or do nothing if it exists."""
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM_ID,
        bytes([_CREATE_IDEMPOTENT]),
        [
            AccountMeta(funder, is_signer=True, is_writable=True),
            AccountMeta(associated_token_address(owner, mint), is_signer=False, is_writable=True),
            AccountMeta(owner, is_signer=False, is_writable=False),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
            AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False),
        ],
    )


def transfer_checked(
    *,
    owner: Pubkey,
    recipient: Pubkey,
    mint: Pubkey,
    amount: int,
    decimals: int,
    references: tuple[Pubkey, ...] = (),
) -> Instruction:
    """`amount` base units from `owner`'s ATA to `recipient`'s ATA, the mint and decimals
    checked by the token program (a look-alike mint fails on chain); `references` as
    read-only non-signer keys at the end, as Solana Pay prescribes."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BQB", _TRANSFER_CHECKED, amount, decimals),
        [
            AccountMeta(associated_token_address(owner, mint), is_signer=False, is_writable=True),
            AccountMeta(mint, is_signer=False, is_writable=False),
            AccountMeta(
                associated_token_address(recipient, mint), is_signer=False, is_writable=True
            ),
            AccountMeta(owner, is_signer=True, is_writable=False),
            *(AccountMeta(ref, is_signer=False, is_writable=False) for ref in references),
        ],
    )


@dataclass(frozen=True)
class TokenBalance:
    """One entry of `meta.pre/postTokenBalances`: a token account of the transaction, its
    mint, the wallet that owns it and its balance in base units."""

    account_index: int
    mint: str
    owner: str | None
    amount: int

    @classmethod
    def from_rpc(cls, entry: dict[str, Any]) -> TokenBalance:
        owner = entry.get("owner")
        return cls(
            account_index=int(entry["accountIndex"]),
            mint=str(entry["mint"]),
            owner=str(owner) if owner else None,
            amount=int(entry["uiTokenAmount"]["amount"]),
        )


def token_changes(
    pre: list[TokenBalance], post: list[TokenBalance], mint: str
) -> dict[int, tuple[str | None, str | None, int]]:
    """account index → (owner before, owner after, post minus pre) for the token accounts of
    `mint` only; an account absent before or after held 0 then (created or closed in the
    transaction) and has no owner then."""
    before = {b.account_index: b for b in pre if b.mint == mint}
    after = {b.account_index: b for b in post if b.mint == mint}
    changes: dict[int, tuple[str | None, str | None, int]] = {}
    for index in before.keys() | after.keys():
        old, new = before.get(index), after.get(index)
        changes[index] = (
            old.owner if old else None,
            new.owner if new else None,
            (new.amount if new else 0) - (old.amount if old else 0),
        )
    return changes
