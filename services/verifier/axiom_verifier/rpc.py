"""A Solana JSON-RPC client for exactly what verification reads, always at `finalized`.

Every failure to get an answer (timeout, connection, HTTP 5xx/429, a JSON-RPC error) raises
`RpcUnavailable`: the caller retries later and never turns it into a verdict. A transaction
the node does not have at `finalized` is `None`: not paid, not finalized yet or pruned, which
only time tells apart.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

FINALIZED = {"commitment": "finalized"}


class RpcUnavailable(Exception):
    pass


@dataclass(frozen=True)
class FinalizedTransaction:
    signature: str
    slot: int
    block_time: int | None
    err: Any
    fee: int
    #: Static keys, then the loaded writable and loaded read-only ones (balances' order).
    account_keys: list[str]
    pre_balances: list[int]
    post_balances: list[int]


@dataclass(frozen=True)
class SignatureInfo:
    signature: str
    slot: int
    err: Any


class SolanaRpc:
    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self._ids = itertools.count(1)

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            async with self._session.post(self._url, json=body) as resp:
                if resp.status != 200:
                    raise RpcUnavailable(f"{method}: HTTP {resp.status}")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RpcUnavailable(f"{method}: {type(exc).__name__}") from exc
        if not isinstance(answer, dict):
            raise RpcUnavailable(f"{method}: malformed answer")
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise RpcUnavailable(f"{method}: RPC error {error.get('code')}")
        return answer.get("result")

    async def transaction(self, signature: str) -> FinalizedTransaction | None:
        result = await self._call(
            "getTransaction",
            [
                signature,
                # Versioned transactions too (wallets send v0); base64 is exact to decode.
                {**FINALIZED, "encoding": "base64", "maxSupportedTransactionVersion": 0},
            ],
        )
        if result is None:
            return None
        try:
            raw = base64.b64decode(result["transaction"][0])
            tx = VersionedTransaction.from_bytes(raw)
            meta = result["meta"]
            loaded = meta.get("loadedAddresses") or {}
            keys = [str(k) for k in tx.message.account_keys]
            keys += list(loaded.get("writable") or []) + list(loaded.get("readonly") or [])
            return FinalizedTransaction(
                signature=str(tx.signatures[0]),
                slot=int(result["slot"]),
                block_time=result.get("blockTime"),
                err=meta.get("err"),
                fee=int(meta.get("fee") or 0),
                account_keys=keys,
                pre_balances=[int(b) for b in meta["preBalances"]],
                post_balances=[int(b) for b in meta["postBalances"]],
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RpcUnavailable(f"getTransaction: unexpected shape ({exc!r})") from exc

    async def signatures_for(self, address: str, limit: int = 25) -> list[SignatureInfo]:
        """Signatures touching `address`, finalized only, oldest first."""
        Pubkey.from_string(address)
        result = await self._call(
            "getSignaturesForAddress", [address, {**FINALIZED, "limit": limit}]
        )
        if not isinstance(result, list):
            raise RpcUnavailable("getSignaturesForAddress: malformed answer")
        infos = [SignatureInfo(str(r["signature"]), int(r["slot"]), r.get("err")) for r in result]
        return sorted(infos, key=lambda i: i.slot)
