"""Redis client construction, the same for every service (works with `rediss://`, e.g. Upstash).

Every call has a bounded timeout: a slow or absent Redis must cost a request milliseconds, not
hang it. The client reconnects by itself on the next call after Redis comes back.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


def create_redis(url: str, timeout: float = 0.5, password: str | None = None) -> aioredis.Redis:
    """`password` (REDIS_PASSWORD, from a file) wins over one in the URL."""
    extra: dict[str, Any] = {"password": password} if password else {}
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        **extra,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry_on_timeout=False,
        # A pooled connection that Redis closed (a restart) is retried once, at once, on a new
        # connection; redis-py's default (10 retries, backoff up to seconds) would outlast the
        # timeout above, so the first calls after a restart would fail.
        retry=Retry(NoBackoff(), 1),
        decode_responses=False,
    )
    return client


async def redis_ready(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError, TimeoutError):
        return False
