"""Solana Pay: the transfer transaction of a transaction request (the URL is in
`axiom_shared.solana_pay`).

The transaction follows the spec's layout for a transfer: a memo instruction (the payment id)
right before the System transfer, the transfer last, and the payment's reference as a
read-only, non-signer key on the transfer instruction, so `getSignaturesForAddress(reference)`
finds the payment on chain whatever wallet paid it.
"""

from __future__ import annotations

import base64
import json

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from axiom_shared.spl_token import create_associated_token_account_idempotent, transfer_checked

MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def transfer_transaction(
    *,
    payer: Pubkey,
    recipient: Pubkey,
    lamports: int,
    reference: Pubkey,
    memo: str,
    blockhash: Hash,
    fee_payer: Pubkey | None = None,
) -> Transaction:
    """The transfer for `payer` to sign, unsigned; `fee_payer` (the merchant's key) pays the
    fee when given, else the payer does."""
    transfer_ix = transfer(
        TransferParams(from_pubkey=payer, to_pubkey=recipient, lamports=lamports)
    )
    transfer_ix = Instruction(
        transfer_ix.program_id,
        transfer_ix.data,
        [*transfer_ix.accounts, AccountMeta(reference, is_signer=False, is_writable=False)],
    )
    memo_ix = Instruction(MEMO_PROGRAM_ID, memo.encode(), [])
    message = Message.new_with_blockhash([memo_ix, transfer_ix], fee_payer or payer, blockhash)
    return Transaction.new_unsigned(message)


def token_transfer_transaction(
    *,
    payer: Pubkey,
    recipient: Pubkey,
    mint: Pubkey,
    decimals: int,
    amount: int,
    reference: Pubkey,
    memo: str,
    blockhash: Hash,
    fee_payer: Pubkey | None = None,
) -> Transaction:
    """An SPL token payment for `payer` to sign: the merchant's associated token account
    created if missing (idempotent; its rent paid by whoever pays the fee), the memo, then
    `TransferChecked` from the payer's associated token account, last, with the reference."""
    funder = fee_payer or payer
    message = Message.new_with_blockhash(
        [
            create_associated_token_account_idempotent(funder=funder, owner=recipient, mint=mint),
            Instruction(MEMO_PROGRAM_ID, memo.encode(), []),
            transfer_checked(
                owner=payer,
                recipient=recipient,
                mint=mint,
                amount=amount,
                decimals=decimals,
                references=(reference,),
            ),
        ],
        funder,
        blockhash,
    )
    return Transaction.new_unsigned(message)


def co_sign(tx: Transaction, fee_payer: Keypair) -> Signature:
    """The merchant's signature as fee payer (then it is the transaction's id)."""
    tx.partial_sign([fee_payer], tx.message.recent_blockhash)
    return tx.signatures[0]


def encoded(tx: Transaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


def as_versioned(tx: Transaction) -> VersionedTransaction:
    return VersionedTransaction.from_bytes(bytes(tx))


def load_keypair(secret: str) -> Keypair:
    """A keypair from base58 (wallet export) or a JSON byte array (solana-keygen file)."""
    text = secret.strip()
    if text.startswith("["):
        raw = bytes(json.loads(text))
        return Keypair.from_bytes(raw)
    return Keypair.from_base58_string(text)
