"""Redis client construction, the same for every service (works with `rediss://`, e.g. Upstash).

Every call has a bounded timeout: a slow or absent Redis must cost a request milliseconds, not
hang it. The client reconnects by itself on the next call after Redis comes back.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
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
        decode_responses=False,
    )
    return client


async def redis_ready(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError, TimeoutError):
        return False
