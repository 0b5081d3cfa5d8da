"""A Solana Pay wallet for the sandbox: pays transfer-request and transaction-request URLs.

    python -m sandbox.solana.wallet pay "solana:<recipient>?amount=0.01&reference=..." \
        [--rpc http://127.0.0.1:8899] [--keypair PATH] [--json]

The payer funds itself by airdrop when its balance is low. Tests call `pay_url` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode

import aiohttp
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment as ClientCommitment
from solana.rpc.commitment import Confirmed, Finalized
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from sandbox.solana.tokens import (
    SANDBOX_USDC_MINT,
    TOKEN_PROGRAM_ID,
    ata,
    create_ata_idempotent,
    mint_decimals,
    token_account,
    transfer_checked,
)

MEMO_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
LAMPORTS_PER_SOL = 1_000_000_000
DEFAULT_RPC_URL = "http://127.0.0.1:8899"
AIRDROP_THRESHOLD_LAMPORTS = LAMPORTS_PER_SOL // 2
AIRDROP_LAMPORTS = 10 * LAMPORTS_PER_SOL


class SolanaPayError(ValueError):
    pass


@dataclass(frozen=True)
class TransferRequest:
    recipient: Pubkey
    amount_lamports: int | None
    references: list[Pubkey] = field(default_factory=list)
    label: str | None = None
    message: str | None = None
    memo: str | None = None
    #: `spl-token`: the amount is in tokens of this mint (`amount` keeps the decimal text).
    spl_token: Pubkey | None = None
    amount: str | None = None


@dataclass(frozen=True)
class TransactionRequest:
    link: str


def sol_to_lamports(amount: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise SolanaPayError(f"invalid amount {amount!r}") from exc
    if value < 0 or not value.is_finite():
        raise SolanaPayError(f"invalid amount {amount!r}")
    lamports = value * LAMPORTS_PER_SOL
    if lamports != lamports.to_integral_value():
        raise SolanaPayError(f"amount {amount!r} has more than 9 decimal places")
    return int(lamports)


def parse_solana_pay_url(url: str) -> TransferRequest | TransactionRequest:
    if not url.startswith("solana:"):
        raise SolanaPayError("not a solana: URL")
    rest = url.removeprefix("solana:")
    path, _, query = rest.partition("?")
    if unquote(path).startswith(("https://", "http://")):
        # A transaction request: everything after "solana:" is the (URL-encoded) link.
        return TransactionRequest(link=unquote(rest))
    try:
        recipient = Pubkey.from_string(path)
    except ValueError as exc:
        raise SolanaPayError(f"invalid recipient {path!r}") from exc
    params = parse_qs(query, keep_blank_values=True)
    amounts = params.get("amount", [])
    spl_token: Pubkey | None = None
    if "spl-token" in params:
        try:
            spl_token = Pubkey.from_string(params["spl-token"][0])
        except ValueError as exc:
            raise SolanaPayError("invalid spl-token") from exc
    try:
        references = [Pubkey.from_string(value) for value in params.get("reference", [])]
    except ValueError as exc:
        raise SolanaPayError("invalid reference") from exc
    return TransferRequest(
        recipient=recipient,
        amount_lamports=sol_to_lamports(amounts[0]) if amounts and spl_token is None else None,
        spl_token=spl_token,
        amount=amounts[0] if amounts and spl_token is not None else None,
        references=references,
        label=params.get("label", [None])[0],
        message=params.get("message", [None])[0],
        memo=params.get("memo", [None])[0],
    )


def encode_transfer_url(request: TransferRequest) -> str:
    fields: list[tuple[str, str]] = []
    if request.spl_token is not None and request.amount is not None:
        fields.append(("amount", request.amount))
        fields.append(("spl-token", str(request.spl_token)))
    elif request.amount_lamports is not None:
        sol = format((Decimal(request.amount_lamports) / LAMPORTS_PER_SOL).normalize(), "f")
        fields.append(("amount", sol))
    fields.extend(("reference", str(reference)) for reference in request.references)
    for name in ("label", "message", "memo"):
        value = getattr(request, name)
        if value is not None:
            fields.append((name, value))
    query = urlencode(fields, quote_via=quote)
    return f"solana:{request.recipient}" + (f"?{query}" if query else "")


def build_transfer_message(request: TransferRequest, payer: Pubkey, blockhash: Hash) -> Message:
    """Memo (if any) right before the transfer, the transfer last, the references as
    read-only non-signer keys on the transfer instruction: the order the spec prescribes."""
    if request.amount_lamports is None:
        raise SolanaPayError("the transfer request has no amount")
    instructions: list[Instruction] = []
    if request.memo:
        instructions.append(Instruction(MEMO_PROGRAM_ID, request.memo.encode(), []))
    ix = transfer(
        TransferParams(
            from_pubkey=payer, to_pubkey=request.recipient, lamports=request.amount_lamports
        )
    )
    accounts = [
        *ix.accounts,
        *(
            AccountMeta(reference, is_signer=False, is_writable=False)
            for reference in request.references
        ),
    ]
    instructions.append(Instruction(ix.program_id, ix.data, accounts))
    return Message.new_with_blockhash(instructions, payer, blockhash)


def token_units(amount: str, decimals: int) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise SolanaPayError(f"invalid amount {amount!r}") from exc
    units = value * (Decimal(10) ** decimals)
    if value < 0 or not value.is_finite() or units != units.to_integral_value():
        raise SolanaPayError(f"amount {amount!r} has more than {decimals} decimal places")
    return int(units)


def build_token_transfer_message(
    request: TransferRequest, payer: Pubkey, blockhash: Hash, decimals: int
) -> Message:
    """An SPL token transfer as wallets build it: the recipient's associated token account
    created if missing (the payer funds it), the memo, then TransferChecked last with the
    references as read-only non-signer keys."""
    if request.spl_token is None or request.amount is None:
        raise SolanaPayError("the transfer request has no token amount")
    mint = request.spl_token
    instructions = [create_ata_idempotent(payer, request.recipient, mint)]
    if request.memo:
        instructions.append(Instruction(MEMO_PROGRAM_ID, request.memo.encode(), []))
    instructions.append(
        transfer_checked(
            payer,
            ata(request.recipient, mint),
            mint,
            token_units(request.amount, decimals),
            decimals,
            [
                AccountMeta(reference, is_signer=False, is_writable=False)
                for reference in request.references
            ],
        )
    )
    return Message.new_with_blockhash(instructions, payer, blockhash)


async def mint_decimals_of(client: AsyncClient, mint: Pubkey) -> int:
    info = (await client.get_account_info(mint, Finalized)).value
    decimals = None if info is None else mint_decimals(info)
    if decimals is None:
        raise SolanaPayError(f"{mint} is not a token mint")
    return decimals


async def token_balance(client: AsyncClient, owner: Pubkey, mint: Pubkey) -> int:
    info = (await client.get_account_info(ata(owner, mint), Confirmed)).value
    state = None if info is None else token_account(info)
    return 0 if state is None else state.amount


async def ensure_tokens(
    client: AsyncClient, rpc_url: str, keypair: Keypair, mint: Pubkey, minimum: int
) -> None:
    """The sandbox wallet holds test USDC: below `minimum`, it asks the sandbox to mint
    (its `/admin/mint`, the token `requestAirdrop`). Other mints are the wallet's own."""
    if mint != SANDBOX_USDC_MINT or await token_balance(client, keypair.pubkey(), mint) >= minimum:
        return
    async with aiohttp.ClientSession() as http:
        base = rpc_url.rstrip("/")
        body = {"owner": str(keypair.pubkey()), "amount": max(minimum, 1000 * 10**6)}
        async with http.post(base + "/admin/mint", json=body) as response:
            if response.status != 200:
                raise SolanaPayError(f"the sandbox would not mint: {await response.text()}")
            signature = Signature.from_string((await response.json())["signature"])
    await client.confirm_transaction(signature, Confirmed, sleep_seconds=0.05)


def sandbox_tokens_owed(tx: VersionedTransaction, payer: Pubkey) -> int:
    """Test USDC that `tx` moves out of the payer's account (TransferChecked instructions)."""
    keys = tx.message.account_keys
    owed = 0
    for ix in tx.message.instructions:
        data = bytes(ix.data)
        if keys[ix.program_id_index] != TOKEN_PROGRAM_ID or len(data) != 10 or data[0] != 12:
            continue
        accounts = [keys[i] for i in bytes(ix.accounts)]
        if len(accounts) >= 4 and accounts[1] == SANDBOX_USDC_MINT and accounts[3] == payer:
            owed += int.from_bytes(data[1:9], "little")
    return owed


def sign_own_slot(tx: VersionedTransaction, keypair: Keypair) -> VersionedTransaction:
    """Add our signature; keep every signature already there (e.g. a merchant fee payer's)."""
    message = tx.message
    signers = message.account_keys[: message.header.num_required_signatures]
    if keypair.pubkey() not in signers:
        raise SolanaPayError("the transaction does not ask the wallet to sign")
    position = signers.index(keypair.pubkey())
    signatures = list(tx.signatures)
    signatures[position] = keypair.sign_message(to_bytes_versioned(message))
    return VersionedTransaction.populate(message, signatures)


async def ensure_funded(
    client: AsyncClient, keypair: Keypair, minimum: int = AIRDROP_THRESHOLD_LAMPORTS
) -> None:
    balance = (await client.get_balance(keypair.pubkey(), Confirmed)).value
    if balance >= minimum:
        return
    signature = (await client.request_airdrop(keypair.pubkey(), AIRDROP_LAMPORTS)).value
    await client.confirm_transaction(signature, Confirmed, sleep_seconds=0.05)


async def fetch_transaction_request(
    session: aiohttp.ClientSession, link: str, account: Pubkey
) -> tuple[VersionedTransaction, str | None]:
    async with session.get(link) as response:
        if response.status >= 400:
            raise SolanaPayError(f"GET {link} -> {response.status}")
        await response.json()  # {label, icon}: a real wallet shows them
    async with session.post(link, json={"account": str(account)}) as response:
        body = await response.json(content_type=None)
        if response.status >= 400 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise SolanaPayError(f"POST {link} -> {response.status}: {message}")
    raw = body.get("transaction")
    if not isinstance(raw, str):
        raise SolanaPayError("the transaction request answer has no transaction")
    return VersionedTransaction.from_bytes(base64.b64decode(raw)), body.get("message")


async def pay_url(
    url: str,
    rpc_url: str = DEFAULT_RPC_URL,
    keypair: Keypair | None = None,
    *,
    confirm: ClientCommitment | None = Confirmed,
    session: aiohttp.ClientSession | None = None,
) -> Signature:
    """Pay a Solana Pay URL from `keypair` (a fresh one if None); wait for `confirm`."""
    payer = keypair or Keypair()
    request = parse_solana_pay_url(url)
    async with AsyncClient(rpc_url, commitment=Finalized) as client:
        await ensure_funded(client, payer)
        if isinstance(request, TransferRequest):
            blockhash = (await client.get_latest_blockhash(Finalized)).value.blockhash
            if request.spl_token is not None:
                decimals = await mint_decimals_of(client, request.spl_token)
                units = token_units(request.amount or "0", decimals)
                await ensure_tokens(client, rpc_url, payer, request.spl_token, units)
                message = build_token_transfer_message(request, payer.pubkey(), blockhash, decimals)
            else:
                message = build_transfer_message(request, payer.pubkey(), blockhash)
            tx = VersionedTransaction(message, [payer])
        else:
            own_session = session is None
            http = session or aiohttp.ClientSession()
            try:
                unsigned, _ = await fetch_transaction_request(http, request.link, payer.pubkey())
            finally:
                if own_session:
                    await http.close()
            owed = sandbox_tokens_owed(unsigned, payer.pubkey())
            if owed:
                await ensure_tokens(client, rpc_url, payer, SANDBOX_USDC_MINT, owed)
            tx = sign_own_slot(unsigned, payer)
        signature = (await client.send_transaction(tx)).value
        if confirm is not None:
            await client.confirm_transaction(signature, confirm, sleep_seconds=0.05)
        return signature


def load_keypair(path: Path) -> Keypair:
    """A Solana CLI keypair file (JSON array of 64 bytes); created when missing."""
    if path.exists():
        return Keypair.from_bytes(bytes(json.loads(path.read_text())))
    keypair = Keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(bytes(keypair))))
    path.chmod(0o600)
    return keypair


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.solana.wallet")
    commands = parser.add_subparsers(dest="command", required=True)
    pay = commands.add_parser("pay", help="pay a solana: transfer or transaction request URL")
    pay.add_argument("url")
    pay.add_argument("--rpc", default=DEFAULT_RPC_URL)
    pay.add_argument("--keypair", type=Path, help="keypair file; a fresh key when omitted")
    pay.add_argument("--json", action="store_true", help="print a JSON object")
    pay.add_argument(
        "--commitment", default="confirmed", choices=["processed", "confirmed", "finalized"]
    )
    args = parser.parse_args(argv)
    keypair = load_keypair(args.keypair) if args.keypair else Keypair()
    try:
        signature = asyncio.run(
            pay_url(args.url, args.rpc, keypair, confirm=ClientCommitment(args.commitment))
        )
    except (SolanaPayError, aiohttp.ClientError) as exc:
        print(f"payment failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"signature": str(signature), "payer": str(keypair.pubkey())}))
    else:
        print(signature)
    return 0


if __name__ == "__main__":
    sys.exit(main())
