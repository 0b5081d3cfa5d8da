"""Solana Pay: the transfer-request URL and the transfer transaction of a transaction request.

The transaction follows the spec's layout for a transfer: a memo instruction (the payment id)
right before the System transfer, the transfer last, and the payment's reference as a
read-only, non-signer key on the transfer instruction, so `getSignaturesForAddress(reference)`
finds the payment on chain whatever wallet paid it.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from urllib.parse import quote

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

LAMPORTS_PER_SOL = 1_000_000_000
MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def lamports_to_sol(lamports: int) -> str:
    """Exact decimal SOL for a URL (`amount` is in SOL, never lamports): 100000000 → '0.1'."""
    sol = Decimal(lamports) / Decimal(LAMPORTS_PER_SOL)
    text = format(sol.normalize(), "f")
    return text


def transfer_url(
    recipient: str, lamports: int, reference: str, label: str, message: str, memo: str
) -> str:
    params = [
        ("amount", lamports_to_sol(lamports)),
        ("reference", reference),
        ("label", label),
        ("message", message),
        ("memo", memo),
    ]
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params)
    return f"solana:{recipient}?{query}"


def transfer_transaction(
    *,
    payer: Pubkey,
    recipient: Pubkey,
    lamports: int,
    reference: Pubkey,
    memo: str,
    blockhash: Hash,
    fee_payer: Keypair | None = None,
) -> tuple[str, Signature | None]:
    """The unsigned-by-the-payer transaction, base64, and the merchant's signature if it
    co-signs as fee payer (then that signature is the transaction's id)."""
    transfer_ix = transfer(
        TransferParams(from_pubkey=payer, to_pubkey=recipient, lamports=lamports)
    )
    transfer_ix = Instruction(
        transfer_ix.program_id,
        transfer_ix.data,
        [*transfer_ix.accounts, AccountMeta(reference, is_signer=False, is_writable=False)],
    )
    memo_ix = Instruction(MEMO_PROGRAM_ID, memo.encode(), [])
    fee_payer_key = fee_payer.pubkey() if fee_payer else payer
    message = Message.new_with_blockhash([memo_ix, transfer_ix], fee_payer_key, blockhash)
    tx = Transaction.new_unsigned(message)
    signature: Signature | None = None
    if fee_payer is not None:
        tx.partial_sign([fee_payer], blockhash)
        signature = tx.signatures[0]
    return base64.b64encode(bytes(tx)).decode(), signature


def load_keypair(secret: str) -> Keypair:
    """A keypair from base58 (wallet export) or a JSON byte array (solana-keygen file)."""
    text = secret.strip()
    if text.startswith("["):
        import json

        raw = bytes(json.loads(text))
        return Keypair.from_bytes(raw)
    return Keypair.from_base58_string(text)
