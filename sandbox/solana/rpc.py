"""JSON-RPC 2.0 over the chain, with the request and response shapes of a real validator."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from solders.hash import Hash
from solders.message import MessageV0, MessageV1, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from axiom_shared.logging import get_logger
from sandbox.solana.chain import Chain, Commitment, TransactionRejected
from sandbox.solana.encoding import (
    Json,
    account_json,
    b58decode,
    confirmed_transaction_json,
    error_json,
    error_message,
    simulation_json,
    status_json,
)
from sandbox.solana.faults import FaultInjector, FaultSettings

log = get_logger(__name__)

SOLANA_CORE_VERSION = "2.2.7"
FEATURE_SET = 3294202862
SLOTS_PER_EPOCH = 432_000
MAX_SIGNATURE_STATUSES = 256
MAX_SIGNATURES_FOR_ADDRESS = 1000
MAX_MULTIPLE_ACCOUNTS = 100

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
PREFLIGHT_FAILURE = -32002
SIGNATURE_VERIFICATION_FAILURE = -32003
NODE_UNHEALTHY = -32005
UNSUPPORTED_TRANSACTION_VERSION = -32015
MIN_CONTEXT_SLOT_NOT_REACHED = -32016


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Json = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> Json:
        error: dict[str, Json] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(detail: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {detail}")


def invalid_param(detail: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid param: {detail}")


def error_response(request_id: Json, error: RpcError) -> Json:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}


Method = Callable[[list[Json]], Awaitable[Json]]


class RpcHandler:
    """Dispatches JSON-RPC payloads (single or batch) to the methods below."""

    def __init__(self, chain: Chain, faults: FaultInjector | None = None) -> None:
        self.chain = chain
        self.faults = faults or FaultInjector(FaultSettings())
        self.request_count = 0
        self.methods: dict[str, Method] = {
            "getHealth": self.get_health,
            "getVersion": self.get_version,
            "getGenesisHash": self.get_genesis_hash,
            "getSlot": self.get_slot,
            "getBlockHeight": self.get_block_height,
            "getEpochInfo": self.get_epoch_info,
            "getBlockTime": self.get_block_time,
            "getBlock": self.get_block,
            "getTransactionCount": self.get_transaction_count,
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "getBalance": self.get_balance,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "getFeeForMessage": self.get_fee_for_message,
            "getRecentPrioritizationFees": self.get_recent_prioritization_fees,
            "requestAirdrop": self.request_airdrop,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getTransaction": self.get_transaction,
        }

    # --- envelope ---------------------------------------------------------------------------

    async def handle(self, payload: Json) -> Json | None:
        """The response for a parsed body; None when there is nothing to answer (notifications)."""
        if isinstance(payload, list):
            if not payload:
                return error_response(None, RpcError(INVALID_REQUEST, "Invalid request"))
            responses = [await self.handle_one(item) for item in payload]
            answered = [response for response in responses if response is not None]
            return answered or None
        return await self.handle_one(payload)

    async def handle_one(self, request: Json) -> Json | None:
        self.request_count += 1
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or not valid_id(request.get("id"))
        ):
            request_id = request.get("id") if isinstance(request, dict) else None
            return error_response(
                request_id if valid_id(request_id) else None,
                RpcError(INVALID_REQUEST, "Invalid request"),
            )
        is_notification = "id" not in request
        request_id = request.get("id")
        method = self.methods.get(request["method"])
        try:
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
            params = request.get("params", [])
            if params is None:
                params = []
            if not isinstance(params, list):
                raise invalid_params("invalid type: map, expected a sequence")
            result = await method(params)
        except RpcError as exc:
            response = error_response(request_id, exc)
        except Exception as exc:  # a bug here must look like a node error, not a dropped socket
            log.exception("rpc_internal_error", method=request["method"])
            response = error_response(
                request_id, RpcError(INTERNAL_ERROR, f"Internal error: {exc}")
            )
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": request_id}
        return None if is_notification else response

    def context(self, value: Json, slot: int) -> Json:
        return {"context": {"slot": slot, "apiVersion": SOLANA_CORE_VERSION}, "value": value}

    # --- simple queries -------------------------------------------------------------------------

    async def get_health(self, params: list[Json]) -> Json:
        return "ok"

    async def get_version(self, params: list[Json]) -> Json:
        return {"solana-core": SOLANA_CORE_VERSION, "feature-set": FEATURE_SET}

    async def get_genesis_hash(self, params: list[Json]) -> Json:
        return str(self.chain.blocks[0].blockhash)

    async def get_slot(self, params: list[Json]) -> Json:
        return self._bank_slot(config_param(params, 0))

    async def get_block_height(self, params: list[Json]) -> Json:
        # No slot is ever skipped here, so block height equals slot.
        return self._bank_slot(config_param(params, 0))

    async def get_epoch_info(self, params: list[Json]) -> Json:
        slot = self._bank_slot(config_param(params, 0))
        return {
            "absoluteSlot": slot,
            "blockHeight": slot,
            "epoch": slot // SLOTS_PER_EPOCH,
            "slotIndex": slot % SLOTS_PER_EPOCH,
            "slotsInEpoch": SLOTS_PER_EPOCH,
            "transactionCount": self.chain.tx_count,
        }

    async def get_block_time(self, params: list[Json]) -> Json:
        slot = param(params, 0)
        if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
            raise invalid_params("invalid type: expected u64")
        block = self.chain.blocks.get(slot)
        if block is None or slot > self.chain.commitment_slot(Commitment.CONFIRMED):
            raise RpcError(-32004, f"Block not available for slot {slot}")
        return block.block_time + self.faults.settings.block_time_offset_seconds

    def _reported_block_time(self, block_time: int) -> int | None:
        settings = self.faults.settings
        if settings.null_block_time:
            return None
        return block_time + settings.block_time_offset_seconds

    async def get_block(self, params: list[Json]) -> Json:
        """A block with `transactionDetails` "signatures" or "none" (the verifier reads a
        transaction's position in its block; full details are not served here)."""
        slot = param(params, 0)
        if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
            raise invalid_params("invalid type: expected u64")
        config = config_param(params, 1)
        commitment = commitment_param(config)
        if commitment is Commitment.PROCESSED:
            raise invalid_params("Method does not support commitment below `confirmed`")
        details = config.get("transactionDetails", "full")
        if details not in ("signatures", "none"):
            raise invalid_params(f"transactionDetails {details!r} is not served by the sandbox")
        block = self.chain.blocks.get(slot)
        if block is None or slot > self.chain.commitment_slot(commitment):
            raise RpcError(-32004, f"Block not available for slot {slot}")
        previous = self.chain.blocks.get(slot - 1)
        answer: dict[str, Json] = {
            "blockhash": str(block.blockhash),
            "previousBlockhash": str(previous.blockhash if previous else block.blockhash),
            "parentSlot": max(slot - 1, 0),
            "blockTime": self._reported_block_time(block.block_time),
            "blockHeight": slot,
        }
        if details == "signatures":
            answer["signatures"] = [str(sig) for sig in block.signatures]
        if config.get("rewards", True):
            answer["rewards"] = []
        return answer

    async def get_transaction_count(self, params: list[Json]) -> Json:
        self._bank_slot(config_param(params, 0))
        return self.chain.tx_count

    async def get_latest_blockhash(self, params: list[Json]) -> Json:
        slot = self._bank_slot(config_param(params, 0))
        block = self.chain.blocks[slot]
        value = {
            "blockhash": str(block.blockhash),
            "lastValidBlockHeight": slot + self.chain.config.blockhash_max_age,
        }
        return self.context(value, slot)

    async def is_blockhash_valid(self, params: list[Json]) -> Json:
        raw = param(params, 0)
        config = config_param(params, 1)
        slot = self._bank_slot(config)
        try:
            blockhash = Hash.from_string(raw) if isinstance(raw, str) else None
        except ValueError:
            blockhash = None
        if blockhash is None:
            raise invalid_param("Invalid")
        valid = self.chain.blockhash_is_valid(blockhash, commitment_param(config))
        return self.context(valid, slot)

    async def get_balance(self, params: list[Json]) -> Json:
        address = _pubkey(param(params, 0))
        config = config_param(params, 1)
        slot = self._bank_slot(config)
        return self.context(self.chain.balance(address, commitment_param(config)), slot)

    async def get_account_info(self, params: list[Json]) -> Json:
        address = _pubkey(param(params, 0))
        config = config_param(params, 1)
        slot = self._bank_slot(config)
        encoding, data_slice = _account_encoding(config)
        account = self.chain.account(address, commitment_param(config))
        value = None if account is None else account_json(account, encoding, data_slice)
        return self.context(value, slot)

    async def get_multiple_accounts(self, params: list[Json]) -> Json:
        raw = param(params, 0)
        if not isinstance(raw, list):
            raise invalid_params("invalid type: expected a sequence")
        if len(raw) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        addresses = [_pubkey(item) for item in raw]
        config = config_param(params, 1)
        slot = self._bank_slot(config)
        encoding, data_slice = _account_encoding(config)
        commitment = commitment_param(config)
        values = []
        for address in addresses:
            account = self.chain.account(address, commitment)
            values.append(None if account is None else account_json(account, encoding, data_slice))
        return self.context(values, slot)

    async def get_minimum_balance_for_rent_exemption(self, params: list[Json]) -> Json:
        size = param(params, 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid_params("invalid type: expected usize")
        self._bank_slot(config_param(params, 1))
        return self.chain.minimum_balance_for_rent_exemption(size)

    async def get_fee_for_message(self, params: list[Json]) -> Json:
        raw = param(params, 0)
        config = config_param(params, 1)
        slot = self._bank_slot(config)
        try:
            message = from_bytes_versioned(base64.b64decode(raw, validate=True))
        except (TypeError, ValueError, binascii.Error) as exc:
            raise invalid_params(f"invalid message: {exc}") from exc
        if isinstance(message, MessageV1):
            raise invalid_params("unsupported message version")
        if not self.chain.blockhash_is_valid(message.recent_blockhash, commitment_param(config)):
            return self.context(None, slot)
        return self.context(self.chain.fee_for_message(message), slot)

    async def get_recent_prioritization_fees(self, params: list[Json]) -> Json:
        return []

    # --- transactions ---------------------------------------------------------------------------

    async def request_airdrop(self, params: list[Json]) -> Json:
        address = _pubkey(param(params, 0))
        lamports = param(params, 1)
        if not isinstance(lamports, int) or isinstance(lamports, bool) or lamports <= 0:
            raise invalid_params("invalid type: expected u64 lamports > 0")
        self._bank_slot(config_param(params, 2))
        try:
            record = self.chain.airdrop(address, lamports)
        except TransactionRejected as exc:
            raise RpcError(
                INTERNAL_ERROR, f"airdrop request failed: {error_message(exc.err)}"
            ) from exc
        if record.err is not None:
            raise RpcError(INTERNAL_ERROR, f"airdrop request failed: {error_message(record.err)}")
        return str(record.signature)

    async def send_transaction(self, params: list[Json]) -> Json:
        config = config_param(params, 1)
        tx = _decode_transaction(param(params, 0), config.get("encoding"))
        signature = tx.signatures[0]
        if not config.get("skipPreflight", False):
            if not all(tx.verify_with_results()):
                raise RpcError(
                    SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure"
                )
            preflight = Commitment.parse(config.get("preflightCommitment"), Commitment.FINALIZED)
            self._check_min_context_slot(config, self.chain.commitment_slot(preflight))
            try:
                simulation = self.chain.simulate(tx, preflight)
            except TransactionRejected as exc:
                raise _preflight_error(exc.err, simulation_json(None, err=exc.err)) from exc
            if simulation.err is not None:
                raise _preflight_error(simulation.err, simulation_json(simulation))
        elif not all(tx.verify_with_results()):
            # Accepted for forwarding, then dropped by the leader's sigverify: never lands.
            log.info("tx_dropped", signature=str(signature), reason="signature verification")
            return str(signature)
        try:
            record = self.chain.process(tx)
        except TransactionRejected as exc:
            # What a leader drops (stale blockhash, no fee payer...) is simply never seen again.
            log.info("tx_dropped", signature=str(signature), reason=error_message(exc.err))
        else:
            log.info(
                "tx_processed",
                signature=str(signature),
                slot=record.slot,
                err=error_json(record.err),
            )
        return str(signature)

    async def simulate_transaction(self, params: list[Json]) -> Json:
        config = config_param(params, 1)
        tx = _decode_transaction(param(params, 0), config.get("encoding"))
        sig_verify = bool(config.get("sigVerify", False))
        replace = bool(config.get("replaceRecentBlockhash", False))
        if sig_verify and replace:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        if sig_verify and not all(tx.verify_with_results()):
            raise RpcError(
                SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure"
            )
        commitment = commitment_param(config)
        slot = self._bank_slot(config)
        replacement: Json = None
        if replace:
            block = self.chain.blocks[slot]
            replacement = {
                "blockhash": str(block.blockhash),
                "lastValidBlockHeight": slot + self.chain.config.blockhash_max_age,
            }
        accounts_config = config.get("accounts")
        try:
            result = self.chain.simulate(tx, commitment, check_blockhash=not replace)
        except TransactionRejected as exc:
            value = simulation_json(None, err=exc.err, replacement_blockhash=replacement)
            return self.context(value, slot)
        accounts: list[Json] | None = None
        if isinstance(accounts_config, dict):
            encoding = accounts_config.get("encoding") or "base64"
            addresses = [_pubkey(item) for item in accounts_config.get("addresses") or []]
            accounts = []
            for address in addresses:
                account = result.post_accounts.get(address) or self.chain.account(
                    address, Commitment.PROCESSED
                )
                accounts.append(None if account is None else account_json(account, encoding))
        value = simulation_json(
            result,
            accounts=accounts,
            inner_instructions=bool(config.get("innerInstructions", False)),
            replacement_blockhash=replacement,
        )
        return self.context(value, slot)

    async def get_signature_statuses(self, params: list[Json]) -> Json:
        raw = param(params, 0)
        if not isinstance(raw, list):
            raise invalid_params("invalid type: expected a sequence of signatures")
        if len(raw) > MAX_SIGNATURE_STATUSES:
            raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
        signatures = [_signature(item) for item in raw]
        config = config_param(params, 1)
        search_history = bool(config.get("searchTransactionHistory", False))
        slot = self.chain.slot
        oldest_cached = slot - self.chain.config.status_cache_slots
        values: list[Json] = []
        for signature in signatures:
            record = self.chain.transaction(signature)
            if record is None or (not search_history and record.slot < oldest_cached):
                values.append(None)
                continue
            status = self.chain.confirmation_status(record)
            values.append(
                {
                    "slot": record.slot,
                    "confirmations": None if status is Commitment.FINALIZED else slot - record.slot,
                    "err": error_json(record.err),
                    "status": status_json(record.err),
                    "confirmationStatus": str(status),
                }
            )
        return self.context(values, slot)

    async def get_signatures_for_address(self, params: list[Json]) -> Json:
        address = _pubkey(param(params, 0))
        config = config_param(params, 1)
        commitment = commitment_param(config)
        if commitment is Commitment.PROCESSED:
            raise invalid_params("Method does not support commitment below `confirmed`")
        self._check_min_context_slot(config, self.chain.commitment_slot(commitment))
        limit = config.get("limit")
        if limit is None:
            limit = MAX_SIGNATURES_FOR_ADDRESS
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise invalid_params("invalid type: expected usize limit")
        if limit == 0 or limit > MAX_SIGNATURES_FOR_ADDRESS:
            raise invalid_params(f"Invalid limit; max {MAX_SIGNATURES_FOR_ADDRESS}")
        before = _signature(config["before"]) if config.get("before") else None
        until = _signature(config["until"]) if config.get("until") else None
        newest_first = [
            record
            for record in reversed(self.chain.history_for(address))
            if self.chain.is_visible(record, commitment)
        ]
        if before is not None:
            positions = [i for i, rec in enumerate(newest_first) if rec.signature == before]
            newest_first = newest_first[positions[0] + 1 :] if positions else []
        results: list[Json] = []
        for record in newest_first:
            if until is not None and record.signature == until:
                break
            if len(results) >= limit:
                break
            results.append(
                {
                    "signature": str(record.signature),
                    "slot": record.slot,
                    "err": error_json(record.err),
                    "memo": record.memo,
                    "blockTime": self._reported_block_time(record.block_time),
                    "confirmationStatus": str(self.chain.confirmation_status(record)),
                }
            )
        return results

    async def get_transaction(self, params: list[Json]) -> Json:
        signature = _signature(param(params, 0))
        raw_config = params[1] if len(params) > 1 else None
        # The older form passes the encoding alone, as a string.
        config = (
            {"encoding": raw_config} if isinstance(raw_config, str) else config_param(params, 1)
        )
        encoding = config.get("encoding") or "json"
        if encoding not in ("json", "jsonParsed", "base64", "base58"):
            raise invalid_params(f"unknown variant `{encoding}`")
        commitment = commitment_param(config)
        if commitment is Commitment.PROCESSED:
            raise invalid_params("Method does not support commitment below `confirmed`")
        max_version = config.get("maxSupportedTransactionVersion")
        if max_version is not None and (
            not isinstance(max_version, int) or isinstance(max_version, bool) or max_version < 0
        ):
            raise invalid_params("invalid type: expected u8 maxSupportedTransactionVersion")
        record = self.chain.transaction(signature)
        if record is None or not self.chain.is_visible(record, commitment):
            return None
        if isinstance(record.transaction.message, MessageV0) and max_version is None:
            raise RpcError(
                UNSUPPORTED_TRANSACTION_VERSION,
                "Transaction version (0) is not supported by the requesting client. "
                "Please try the request again with the following configuration parameter: "
                '"maxSupportedTransactionVersion": 0',
            )
        answer = confirmed_transaction_json(
            record, encoding, include_version=max_version is not None
        )
        if isinstance(answer, dict):
            answer["blockTime"] = self._reported_block_time(record.block_time)
        return answer

    # --- helpers --------------------------------------------------------------------------------

    def _bank_slot(self, config: dict[str, Json]) -> int:
        slot = self.chain.commitment_slot(commitment_param(config))
        self._check_min_context_slot(config, slot)
        return slot

    def _check_min_context_slot(self, config: dict[str, Json], slot: int) -> None:
        minimum = config.get("minContextSlot")
        if isinstance(minimum, int) and minimum > slot:
            raise RpcError(
                MIN_CONTEXT_SLOT_NOT_REACHED,
                "Minimum context slot has not been reached",
                {"contextSlot": slot},
            )


def valid_id(value: Json) -> bool:
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def param(params: list[Json], index: int) -> Json:
    """The positional parameter at `index` (an error when the request has too few)."""
    if len(params) <= index:
        raise invalid_params(f"`params` should have at least {index + 1} argument(s)")
    return params[index]


def config_param(params: list[Json], index: int) -> dict[str, Json]:
    if len(params) <= index or params[index] is None:
        return {}
    value = params[index]
    if not isinstance(value, dict):
        raise invalid_params("invalid type: expected a config object")
    return value


def commitment_param(config: dict[str, Json]) -> Commitment:
    try:
        return Commitment.parse(config.get("commitment"), Commitment.FINALIZED)
    except ValueError as exc:
        raise invalid_params(f"unknown commitment {config.get('commitment')!r}") from exc


def _pubkey(value: Json) -> Pubkey:
    if not isinstance(value, str):
        raise invalid_param("Invalid")
    try:
        raw = b58decode(value)
    except ValueError as exc:
        raise invalid_param("Invalid") from exc
    if len(raw) != 32:
        raise invalid_param("WrongSize")
    return Pubkey.from_bytes(raw)


def _signature(value: Json) -> Signature:
    if not isinstance(value, str):
        raise invalid_param("Invalid")
    try:
        raw = b58decode(value)
    except ValueError as exc:
        raise invalid_param("Invalid") from exc
    if len(raw) != 64:
        raise invalid_param("WrongSize")
    return Signature.from_bytes(raw)


def _account_encoding(config: dict[str, Json]) -> tuple[str, tuple[int, int] | None]:
    encoding = config.get("encoding") or "binary"
    if encoding == "binary":
        encoding = "base58"
    if encoding not in ("base58", "base64", "jsonParsed"):
        raise invalid_params(f"unsupported encoding: {encoding}")
    data_slice = config.get("dataSlice")
    if data_slice is None:
        return encoding, None
    if not isinstance(data_slice, dict):
        raise invalid_params("invalid dataSlice")
    offset, length = data_slice.get("offset"), data_slice.get("length")
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise invalid_params("invalid dataSlice")
    return encoding, (offset, length)


def _decode_transaction(raw: Json, encoding: Json) -> VersionedTransaction:
    encoding = encoding or "base58"
    if not isinstance(raw, str):
        raise invalid_params("invalid type: expected an encoded transaction string")
    try:
        if encoding == "base58":
            wire = b58decode(raw)
        elif encoding == "base64":
            wire = base64.b64decode(raw, validate=True)
        else:
            raise invalid_params(
                f"unsupported encoding: {encoding}. Supported encodings: base58, base64"
            )
    except (ValueError, binascii.Error) as exc:
        raise invalid_params(f"invalid {encoding} encoding: {exc}") from exc
    try:
        tx = VersionedTransaction.from_bytes(wire)
    except ValueError as exc:
        raise invalid_params(
            f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}"
        ) from exc
    try:
        tx.sanitize()
    except Exception as exc:  # solders raises its own SanitizeError type
        raise invalid_params(
            "invalid transaction: Transaction failed to sanitize accounts offsets correctly"
        ) from exc
    if not tx.signatures:
        raise invalid_params("invalid transaction: no signatures")
    if isinstance(tx.message, MessageV1):
        raise invalid_params("invalid transaction: Transaction version is unsupported")
    return tx


def _preflight_error(err: Any, data: Json) -> RpcError:
    return RpcError(PREFLIGHT_FAILURE, f"Transaction simulation failed: {error_message(err)}", data)
