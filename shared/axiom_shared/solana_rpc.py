"""The one Solana JSON-RPC client of the services: what payment creation asks (a recent
blockhash, a simulation) and what verification reads (always at `finalized`).

Ours rather than solana-py's `AsyncClient`: verification needs `getBlock` with
`transactionDetails: "signatures"` (a block's transaction order), which that client cannot
ask for; this one shares the services' aiohttp stack and maps every failure to one exception.
solders does the (de)serialization.

Every failure to get an answer (timeout, connection, HTTP 5xx/429, a JSON-RPC error) raises
`RpcUnavailable`: the caller retries later and never turns it into a finding. A transaction
the node does not have at `finalized` is `None`: not paid, not finalized yet or pruned, which
only time tells apart.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from axiom_shared.spl_token import TokenBalance

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
    #: `meta.pre/postTokenBalances`: every token account the transaction touched.
    pre_token_balances: list[TokenBalance] = field(default_factory=list)
    post_token_balances: list[TokenBalance] = field(default_factory=list)


@dataclass(frozen=True)
class SignatureInfo:
    signature: str
    slot: int
    err: Any
    block_time: int | None = None


#: The most getSignaturesForAddress returns per call (a node's own limit).
SIGNATURES_PAGE = 1000


@dataclass(frozen=True)
class Simulation:
    #: The transaction error as the node reports it (None: it would succeed).
    err: Any
    logs: list[str]


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

    async def latest_blockhash(self, commitment: str = "finalized") -> Hash:
        result = await self._call("getLatestBlockhash", [{"commitment": commitment}])
        try:
            return Hash.from_string(str(result["value"]["blockhash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RpcUnavailable(f"getLatestBlockhash: unexpected shape ({exc!r})") from exc

    async def simulate(self, tx: VersionedTransaction, commitment: str = "confirmed") -> Simulation:
        """Run `tx` against the bank at `commitment` without its signatures being checked."""
        wire = base64.b64encode(bytes(tx)).decode()
        config = {"encoding": "base64", "sigVerify": False, "commitment": commitment}
        result = await self._call("simulateTransaction", [wire, config])
        try:
            value = result["value"]
            return Simulation(err=value.get("err"), logs=[str(x) for x in value.get("logs") or []])
        except (KeyError, TypeError, AttributeError) as exc:
            raise RpcUnavailable(f"simulateTransaction: unexpected shape ({exc!r})") from exc

    async def send(self, tx: VersionedTransaction) -> str:
        """Submit a signed transaction (preflight at `confirmed`); its signature."""
        wire = base64.b64encode(bytes(tx)).decode()
        config = {"encoding": "base64", "preflightCommitment": "confirmed"}
        result = await self._call("sendTransaction", [wire, config])
        if not isinstance(result, str):
            raise RpcUnavailable("sendTransaction: malformed answer")
        return result

    async def transaction(
        self, signature: str, commitment: str = "finalized"
    ) -> FinalizedTransaction | None:
        """The transaction as the node has it at `commitment`: `finalized` for everything
        that decides; `confirmed` only to show a payment as seen."""
        result = await self._call(
            "getTransaction",
            [
                signature,
                # Versioned transactions too (wallets send v0); base64 is exact to decode.
                {
                    "commitment": commitment,
                    "encoding": "base64",
                    "maxSupportedTransactionVersion": 0,
                },
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
                pre_token_balances=[
                    TokenBalance.from_rpc(b) for b in meta.get("preTokenBalances") or []
                ],
                post_token_balances=[
                    TokenBalance.from_rpc(b) for b in meta.get("postTokenBalances") or []
                ],
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RpcUnavailable(f"getTransaction: unexpected shape ({exc!r})") from exc

    async def signatures_for(
        self,
        address: str,
        *,
        until: str | None = None,
        not_before: int | None = None,
        limit: int = SIGNATURES_PAGE,
    ) -> list[SignatureInfo]:
        """Every finalized signature touching `address`, oldest first: newer than `until` when
        given, else back to `not_before` (unix seconds; the page that reaches it is the last),
        else back to the first. Pages with `before`: no number of transactions hides one."""
        Pubkey.from_string(address)
        found: list[SignatureInfo] = []
        before: str | None = None
        while True:
            config: dict[str, Any] = {**FINALIZED, "limit": limit}
            if before:
                config["before"] = before
            if until:
                config["until"] = until
            result = await self._call("getSignaturesForAddress", [address, config])
            if not isinstance(result, list):
                raise RpcUnavailable("getSignaturesForAddress: malformed answer")
            try:
                page = [
                    SignatureInfo(
                        str(r["signature"]), int(r["slot"]), r.get("err"), r.get("blockTime")
                    )
                    for r in result
                ]
            except (KeyError, TypeError, ValueError) as exc:
                raise RpcUnavailable(
                    f"getSignaturesForAddress: unexpected shape ({exc!r})"
                ) from exc
            found.extend(page)
            if len(page) < limit:
                break
            oldest = page[-1]
            if (
                not_before is not None
                and oldest.block_time is not None
                and oldest.block_time < not_before
            ):
                break
            before = oldest.signature
        # Newest first on the wire; chain order (slot, then the node's order within it) here.
        found.reverse()
        return sorted(found, key=lambda info: info.slot)

    async def block_signatures(self, slot: int) -> list[str] | None:
        """The signatures of the finalized block at `slot`, in block order (None: skipped or
        not finalized yet)."""
        result = await self._call(
            "getBlock",
            [
                slot,
                {
                    **FINALIZED,
                    "transactionDetails": "signatures",
                    "rewards": False,
                    "maxSupportedTransactionVersion": 0,
                },
            ],
        )
        if result is None:
            return None
        try:
            return [str(sig) for sig in result["signatures"]]
        except (KeyError, TypeError) as exc:
            raise RpcUnavailable(f"getBlock: unexpected shape ({exc!r})") from exc

    async def block_time(self, slot: int) -> int | None:
        """The slot's estimated production time (unix seconds), when the node has it."""
        result = await self._call("getBlockTime", [slot])
        if result is None:
            return None
        if not isinstance(result, int) or isinstance(result, bool):
            raise RpcUnavailable("getBlockTime: malformed answer")
        return result


class RecentBlockhash:
    """A recent blockhash, fetched at most once per `max_age` (a slot, 400 ms on mainnet) and
    shared by every caller: concurrent callers wait for the one request in flight. A finalized
    blockhash stays valid for about 150 slots, so one a slot old costs a wallet nothing."""

    def __init__(
        self,
        rpc: SolanaRpc,
        *,
        commitment: str = "finalized",
        max_age: float = 0.4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc
        self._commitment = commitment
        self._max_age = max_age
        self._clock = clock
        self._value: Hash | None = None
        self._fetched_at = -math.inf
        self._pending: asyncio.Future[Hash] | None = None
        #: RPC calls made (the cache's hit ratio is the callers beside it).
        self.fetches = 0

    async def get(self) -> Hash:
        if self._value is not None and self._clock() - self._fetched_at < self._max_age:
            return self._value
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._fetch())
        # Shielded: one caller giving up does not cancel the request the others wait for.
        return await asyncio.shield(self._pending)

    async def _fetch(self) -> Hash:
        try:
            started = self._clock()
            self.fetches += 1
            value = await self._rpc.latest_blockhash(self._commitment)
            self._value, self._fetched_at = value, started
            return value
        finally:
            self._pending = None
