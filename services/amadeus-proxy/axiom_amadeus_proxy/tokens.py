"""The Amadeus access token, cached in Redis and refreshed by exactly one caller at a time.

- The token lives at `<prefix>:token` with a TTL of `expires_in` minus a safety margin, so a
  cached token is always still valid at Amadeus when it is used.
- A cold or expired token is fetched by one caller across all replicas: it takes the lock
  `<prefix>:token:lock` with `SET NX PX` and a random owner value, checks the cache once more,
  fetches, stores, and releases the lock with a compare-and-delete script (so a caller whose
  lock had expired can never delete the next holder's lock). Everyone else polls the cache
  until the new token is there; if the holder dies, its lock expires and another caller takes
  over. Within one replica, concurrent callers share one refresh (no stampede on Redis).
- A 401 38190 from Amadeus invalidates the token with the same compare-and-delete: only if the
  cached token is still the one that failed, so a late 401 never discards a fresh token.
- Each replica also keeps the token it last read or stored in memory until the Redis copy's
  own expiry (read with it, in the same round trip): a call that finds it there costs no
  Redis round trip. If another replica's 401 removed it meanwhile, this replica's next call
  gets its own 401 (Amadeus did nothing), drops it and reads Redis again.

The token and the client secret are never logged (nor put in errors).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from axiom_shared.errors import ApiError
from axiom_shared.logging import get_logger
from axiom_shared.metrics import TOKEN_CACHE

log = get_logger(__name__)

# Delete KEYS[1] only when it still holds ARGV[1].
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_POLL_INTERVAL = 0.02


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: float


FetchToken = Callable[[], Awaitable[IssuedToken]]


class TokenCache:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        fetch: FetchToken,
        *,
        margin: float,
        lock_ttl: float,
        wait: float,
    ) -> None:
        self._redis = redis
        self._key = f"{prefix}:token"
        self._lock_key = f"{prefix}:token:lock"
        self._fetch = fetch
        self._margin = margin
        self._lock_ttl_ms = max(1, int(lock_ttl * 1000))
        self._wait = wait
        self._compare_and_delete = redis.register_script(_COMPARE_AND_DELETE)
        self._refresh: asyncio.Task[str] | None = None
        #: The token in this process and when (event-loop time) its Redis copy expires.
        self._local: tuple[str, float] | None = None

    async def get(self) -> str:
        """A valid token: the cached one, or a fresh one (fetched by one caller only)."""
        loop = asyncio.get_running_loop()
        local = self._local
        if local is not None and loop.time() < local[1]:
            TOKEN_CACHE.labels(upstream="amadeus", result="hit").inc()
            return local[0]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._key)
            pipe.pttl(self._key)
            cached, ttl_ms = await pipe.execute()
        if cached:
            TOKEN_CACHE.labels(upstream="amadeus", result="hit").inc()
            token = _text(cached)
            if isinstance(ttl_ms, int) and ttl_ms > 0:
                self._local = (token, loop.time() + ttl_ms / 1000)
            return token
        TOKEN_CACHE.labels(upstream="amadeus", result="miss").inc()
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._refresh_once(), name="amadeus-token")
            # Its outcome is read by the waiters; this only keeps an unread failure quiet.
            self._refresh.add_done_callback(_consume_outcome)
        # Shielded: one caller giving up must not cancel the refresh the others wait for.
        return await asyncio.shield(self._refresh)

    async def invalidate(self, failed_token: str) -> bool:
        """Forget the cached token if it is the one Amadeus refused; True if it was."""
        if self._local is not None and self._local[0] == failed_token:
            self._local = None
        deleted = await self._compare_and_delete(keys=[self._key], args=[failed_token])
        if deleted:
            TOKEN_CACHE.labels(upstream="amadeus", result="invalidated").inc()
            log.info("amadeus token invalidated after 401")
        return bool(deleted)

    async def _refresh_once(self) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        owner = secrets.token_hex(16)
        while True:
            cached = await self._redis.get(self._key)
            if cached:
                return _text(cached)
            if await self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms):
                try:
                    return await self._fetch_and_store()
                finally:
                    await self._compare_and_delete(keys=[self._lock_key], args=[owner])
            if loop.time() >= deadline:
                raise ApiError(
                    503,
                    "upstream_auth_pending",
                    "the travel provider session is being renewed, try again shortly",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(_POLL_INTERVAL)

    async def _fetch_and_store(self) -> str:
        # Someone may have stored a token between our cache miss and taking the lock.
        cached = await self._redis.get(self._key)
        if cached:
            return _text(cached)
        issued = await self._fetch()
        ttl = issued.expires_in - self._margin
        if ttl <= 0:
            # A lifetime shorter than the margin (test tokens): keep it for half of it.
            ttl = issued.expires_in / 2
        ttl_ms = max(1, int(ttl * 1000))
        await self._redis.set(self._key, issued.access_token, px=ttl_ms)
        self._local = (issued.access_token, asyncio.get_running_loop().time() + ttl_ms / 1000)
        TOKEN_CACHE.labels(upstream="amadeus", result="refresh").inc()
        log.info("amadeus token refreshed", cached_for_s=round(ttl_ms / 1000, 3))
        return issued.access_token


def _consume_outcome(task: asyncio.Task[str]) -> None:
    if not task.cancelled():
        task.exception()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
