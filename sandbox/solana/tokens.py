"""SPL tokens on the sandbox chain: a test USDC mint that exists from the first slot, minting
to any wallet (a real MintTo transaction, so it shows on chain like any other), and the token
balances a validator reports in `meta.pre/postTokenBalances`.

The sandbox keeps its own reading of the token program's layouts and instructions (as it
keeps its own base58): it plays the validator and the wallet, so a mistake in the services'
`axiom_shared.spl_token` is caught here rather than repeated.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.token.state import Mint, TokenAccount

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM_ID = Pubkey.from_string("11111111111111111111111111111111")
TOKEN_ACCOUNT_SIZE = 165
MINT_SIZE = 82

#: The sandbox's test USDC: its key comes from a public seed, so every sandbox (and `make run`'s
#: `USDC_MINT`) names the same mint. It must never mean anything on a real cluster.
SANDBOX_USDC_MINT_KEYPAIR = Keypair.from_seed(
    hashlib.sha256(b"axiomid sandbox test usdc mint").digest()
)
SANDBOX_USDC_MINT = SANDBOX_USDC_MINT_KEYPAIR.pubkey()
SANDBOX_USDC_DECIMALS = 6


def mint_account(authority: Pubkey, decimals: int, rent: int) -> Account:
    data = bytes(Mint(authority, 0, decimals, True, None))
    return Account(rent, data, TOKEN_PROGRAM_ID)


def ata(owner: Pubkey, mint: Pubkey) -> Pubkey:
    address, _ = Pubkey.find_program_address(
        [bytes(owner), bytes(TOKEN_PROGRAM_ID), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM_ID
    )
    return address


def create_ata_idempotent(funder: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM_ID,
        b"\x01",
        [
            AccountMeta(funder, True, True),
            AccountMeta(ata(owner, mint), False, True),
            AccountMeta(owner, False, False),
            AccountMeta(mint, False, False),
            AccountMeta(SYSTEM_PROGRAM_ID, False, False),
            AccountMeta(TOKEN_PROGRAM_ID, False, False),
        ],
    )


def mint_to(mint: Pubkey, owner: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BQ", 7, amount),
        [
            AccountMeta(mint, False, True),
            AccountMeta(ata(owner, mint), False, True),
            AccountMeta(authority, True, False),
        ],
    )


def transfer_checked(
    source_owner: Pubkey,
    destination: Pubkey,
    mint: Pubkey,
    amount: int,
    decimals: int,
    extra: list[AccountMeta] | None = None,
) -> Instruction:
    """From `source_owner`'s ATA to the token account `destination` (not a wallet)."""
    return Instruction(
        TOKEN_PROGRAM_ID,
        struct.pack("<BQB", 12, amount, decimals),
        [
            AccountMeta(ata(source_owner, mint), False, True),
            AccountMeta(mint, False, False),
            AccountMeta(destination, False, True),
            AccountMeta(source_owner, True, False),
            *(extra or []),
        ],
    )


@dataclass(frozen=True)
class TokenBalance:
    account_index: int
    mint: Pubkey
    owner: Pubkey
    amount: int
    decimals: int


def token_account(account: Account | None) -> TokenAccount | None:
    """The token account state, when `account` is one of the token program's."""
    if (
        account is None
        or account.owner != TOKEN_PROGRAM_ID
        or len(account.data) != TOKEN_ACCOUNT_SIZE
    ):
        return None
    try:
        return TokenAccount.from_bytes(bytes(account.data))
    except ValueError:
        return None


def mint_decimals(account: Account | None) -> int | None:
    if account is None or account.owner != TOKEN_PROGRAM_ID or len(account.data) != MINT_SIZE:
        return None
    try:
        return Mint.from_bytes(bytes(account.data)).decimals
    except ValueError:
        return None
