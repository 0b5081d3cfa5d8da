"""The wire shapes a validator answers with: transactions (json, jsonParsed, base64, base58),
transaction metadata, accounts, simulation results and transaction errors."""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal
from typing import Any

from solders.account import Account
from solders.instruction import CompiledInstruction
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import InnerInstruction
from solders.transaction_status import TransactionErrorType, UiTransactionStatusMeta

from sandbox.solana.chain import (
    MEMO_PROGRAM_IDS,
    AnyMessage,
    LoadedAddresses,
    SimulationResult,
    TxRecord,
    is_writable,
)
from sandbox.solana.tokens import TOKEN_PROGRAM_ID, TokenBalance

Json = Any
RENT_EXEMPT_EPOCH = 2**64 - 1
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {char: i for i, char in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = _B58_ALPHABET[rem] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


# --- errors ---------------------------------------------------------------------------------


def error_json(err: TransactionErrorType | None) -> Json:
    """The serde JSON of a TransactionError, e.g. {"InstructionError": [0, {"Custom": 1}]}."""
    if err is None:
        return None
    meta = UiTransactionStatusMeta(err=err, fee=0, pre_balances=[], post_balances=[])
    return json.loads(meta.to_json())["err"]


def status_json(err: TransactionErrorType | None) -> Json:
    return {"Ok": None} if err is None else {"Err": error_json(err)}


_TX_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "AddressLookupTableNotFound": ("Transaction loads an address table account that doesn't exist"),
    "InvalidAddressLookupTableIndex": ("Transaction address table lookup uses an invalid index"),
    "UnsupportedVersion": "Transaction version is unsupported",
}
_IX_ERROR_TEXT = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "PrivilegeEscalation": "Cross-program invocation with unauthorized signer or writable account",
    "ExternalAccountLamportSpend": (
        "instruction spent from the balance of an account it does not own"
    ),
    "ReadonlyLamportChange": "instruction changed the balance of a read-only account",
}


def error_message(err: TransactionErrorType) -> str:
    """The Display text of a TransactionError, as it appears in RPC error messages."""
    value = error_json(err)
    if isinstance(value, str):
        return _TX_ERROR_TEXT.get(value, value)
    if isinstance(value, dict) and "InstructionError" in value:
        index, inner = value["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            text = f"custom program error: {inner['Custom']:#x}"
        elif isinstance(inner, str):
            text = _IX_ERROR_TEXT.get(inner, inner)
        else:
            text = json.dumps(inner)
        return f"Error processing Instruction {index}: {text}"
    if isinstance(value, dict) and "InsufficientFundsForRent" in value:
        index = value["InsufficientFundsForRent"]["account_index"]
        return f"Transaction results in an account ({index}) with insufficient funds for rent"
    return json.dumps(value)


# --- transactions ---------------------------------------------------------------------------


def _compiled_json(ix: CompiledInstruction, stack_height: int | None) -> Json:
    return {
        "programIdIndex": ix.program_id_index,
        "accounts": list(bytes(ix.accounts)),
        "data": b58encode(bytes(ix.data)),
        "stackHeight": stack_height,
    }


def _header_json(message: AnyMessage) -> Json:
    header = message.header
    return {
        "numRequiredSignatures": header.num_required_signatures,
        "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
        "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
    }


def _lookups_json(message: MessageV0) -> Json:
    return [
        {
            "accountKey": str(lookup.account_key),
            "writableIndexes": list(bytes(lookup.writable_indexes)),
            "readonlyIndexes": list(bytes(lookup.readonly_indexes)),
        }
        for lookup in message.address_table_lookups
    ]


def transaction_json(tx: VersionedTransaction) -> Json:
    message = tx.message
    ui_message: dict[str, Json] = {
        "accountKeys": [str(key) for key in message.account_keys],
        "header": _header_json(message),
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [_compiled_json(ix, None) for ix in message.instructions],
    }
    if isinstance(message, MessageV0):
        ui_message["addressTableLookups"] = _lookups_json(message)
    return {"signatures": [str(sig) for sig in tx.signatures], "message": ui_message}


def _instruction_parsed(
    program_id: Pubkey, accounts: list[Pubkey], data: bytes, stack_height: int | None
) -> Json:
    if program_id in MEMO_PROGRAM_IDS:
        return {
            "parsed": data.decode("utf-8", errors="replace"),
            "program": "spl-memo",
            "programId": str(program_id),
            "stackHeight": stack_height,
        }
    transfer = decode_system_transfer(program_id, accounts, data)
    if transfer is not None:
        source, destination, lamports = transfer
        return {
            "parsed": {
                "info": {
                    "destination": str(destination),
                    "lamports": lamports,
                    "source": str(source),
                },
                "type": "transfer",
            },
            "program": "system",
            "programId": str(program_id),
            "stackHeight": stack_height,
        }
    return {
        "accounts": [str(key) for key in accounts],
        "data": b58encode(data),
        "programId": str(program_id),
        "stackHeight": stack_height,
    }


def decode_system_transfer(
    program_id: Pubkey, accounts: list[Pubkey], data: bytes
) -> tuple[Pubkey, Pubkey, int] | None:
    """(source, destination, lamports) when this is a System Program Transfer."""
    if program_id != SYSTEM_PROGRAM_ID or len(data) != 12 or len(accounts) < 2:
        return None
    kind, lamports = struct.unpack("<IQ", data)
    if kind != 2:
        return None
    return accounts[0], accounts[1], lamports


def _resolve(ix: CompiledInstruction, keys: list[Pubkey]) -> tuple[Pubkey, list[Pubkey], bytes]:
    return (
        keys[ix.program_id_index],
        [keys[i] for i in bytes(ix.accounts)],
        bytes(ix.data),
    )


def transaction_json_parsed(tx: VersionedTransaction, loaded: LoadedAddresses) -> Json:
    message = tx.message
    keys = [*message.account_keys, *loaded.writable, *loaded.readonly]
    static = len(message.account_keys)
    account_keys = [
        {
            "pubkey": str(key),
            "signer": i < message.header.num_required_signatures,
            "source": "transaction" if i < static else "lookupTable",
            "writable": is_writable(message, i, loaded),
        }
        for i, key in enumerate(keys)
    ]
    ui_message: dict[str, Json] = {
        "accountKeys": account_keys,
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [
            _instruction_parsed(*_resolve(ix, keys), None) for ix in message.instructions
        ],
    }
    if isinstance(message, MessageV0):
        ui_message["addressTableLookups"] = _lookups_json(message)
    return {"signatures": [str(sig) for sig in tx.signatures], "message": ui_message}


def inner_instructions_json(
    inner: list[list[InnerInstruction]], keys: list[Pubkey] | None = None
) -> Json:
    """Only instructions that made inner calls appear; `keys` given means jsonParsed."""
    out = []
    for index, group in enumerate(inner):
        if not group:
            continue
        items = []
        for item in group:
            compiled = item.instruction()
            if keys is None:
                items.append(_compiled_json(compiled, item.stack_height()))
            else:
                items.append(_instruction_parsed(*_resolve(compiled, keys), item.stack_height()))
        out.append({"index": index, "instructions": items})
    return out


def loaded_addresses_json(loaded: LoadedAddresses) -> Json:
    return {
        "writable": [str(key) for key in loaded.writable],
        "readonly": [str(key) for key in loaded.readonly],
    }


def token_balances_json(balances: tuple[TokenBalance, ...]) -> Json:
    out = []
    for balance in balances:
        scaled = Decimal(balance.amount) / (Decimal(10) ** balance.decimals)
        out.append(
            {
                "accountIndex": balance.account_index,
                "mint": str(balance.mint),
                "owner": str(balance.owner),
                "programId": str(TOKEN_PROGRAM_ID),
                "uiTokenAmount": {
                    "amount": str(balance.amount),
                    "decimals": balance.decimals,
                    "uiAmount": float(scaled) if balance.amount else None,
                    "uiAmountString": format(scaled.normalize(), "f"),
                },
            }
        )
    return out


def meta_json(record: TxRecord, *, parsed: bool = False) -> Json:
    meta: dict[str, Json] = {
        "err": error_json(record.err),
        "status": status_json(record.err),
        "fee": record.fee,
        "preBalances": record.pre_balances,
        "postBalances": record.post_balances,
        "innerInstructions": inner_instructions_json(
            record.inner_instructions, record.account_keys if parsed else None
        ),
        "logMessages": record.logs,
        "preTokenBalances": token_balances_json(record.pre_token_balances),
        "postTokenBalances": token_balances_json(record.post_token_balances),
        "rewards": [],
        "computeUnitsConsumed": record.compute_units,
    }
    if not parsed:
        # jsonParsed carries the loaded keys inside accountKeys (source "lookupTable") instead.
        meta["loadedAddresses"] = loaded_addresses_json(record.loaded)
    return meta


def version_json(tx: VersionedTransaction) -> Json:
    return 0 if isinstance(tx.message, MessageV0) else "legacy"


def encode_transaction(record: TxRecord, encoding: str) -> Json:
    if encoding == "json":
        return transaction_json(record.transaction)
    if encoding == "jsonParsed":
        return transaction_json_parsed(record.transaction, record.loaded)
    raw = bytes(record.transaction)
    if encoding == "base58":
        return [b58encode(raw), "base58"]
    return [base64.b64encode(raw).decode(), "base64"]


def confirmed_transaction_json(record: TxRecord, encoding: str, *, include_version: bool) -> Json:
    """getTransaction's result (and a Helius raw webhook item, with indexWithinBlock added)."""
    result: dict[str, Json] = {
        "slot": record.slot,
        "transaction": encode_transaction(record, encoding),
        "meta": meta_json(record, parsed=encoding == "jsonParsed"),
        "blockTime": record.block_time,
    }
    if include_version:
        result["version"] = version_json(record.transaction)
    return result


# --- accounts and simulation ----------------------------------------------------------------


def account_json(
    account: Account, encoding: str, data_slice: tuple[int, int] | None = None
) -> Json:
    data = bytes(account.data)
    if data_slice is not None:
        offset, length = data_slice
        data = data[offset : offset + length]
    encoded: Json
    if encoding == "base58":
        encoded = [b58encode(data), "base58"]
    else:  # base64; jsonParsed falls back to it when no parser applies (none here does)
        encoded = [base64.b64encode(data).decode(), "base64"]
    return {
        "data": encoded,
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        # Rent collection is gone: a validator reports u64::MAX for rent-exempt accounts.
        "rentEpoch": account.rent_epoch or RENT_EXEMPT_EPOCH,
        "space": len(bytes(account.data)),
    }


def simulation_json(
    result: SimulationResult | None,
    *,
    err: TransactionErrorType | None = None,
    accounts: list[Json] | None = None,
    inner_instructions: bool = False,
    replacement_blockhash: Json = None,
) -> Json:
    """RpcSimulateTransactionResult; `result` None means the transaction failed before running."""
    if result is None:
        return {
            "err": error_json(err),
            "logs": [],
            "accounts": None,
            "unitsConsumed": 0,
            "returnData": None,
            "innerInstructions": None,
            "replacementBlockhash": replacement_blockhash,
            "loadedAccountsDataSize": 0,
            "fee": None,
            "preBalances": None,
            "postBalances": None,
            "preTokenBalances": None,
            "postTokenBalances": None,
            "loadedAddresses": None,
        }
    return_data: Json = None
    if result.return_data is not None:
        program_id, data = result.return_data
        return_data = {
            "programId": str(program_id),
            "data": [base64.b64encode(data).decode(), "base64"],
        }
    return {
        "err": error_json(result.err),
        "logs": result.logs,
        "accounts": accounts,
        "unitsConsumed": result.units_consumed,
        "returnData": return_data,
        "innerInstructions": inner_instructions_json(result.inner_instructions)
        if inner_instructions
        else None,
        "replacementBlockhash": replacement_blockhash,
        "loadedAccountsDataSize": 0,
        "fee": result.fee,
        "preBalances": result.pre_balances,
        "postBalances": result.post_balances,
        "preTokenBalances": [],
        "postTokenBalances": [],
        "loadedAddresses": loaded_addresses_json(result.loaded),
    }
