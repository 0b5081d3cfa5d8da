"""The double's mutable state: issued tokens, per-client rate windows, fault switches, counters."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Clock = Callable[[], float]


@dataclass(slots=True)
class IssuedToken:
    client_id: str
    expires_at: float


class TokenStore:
    def __init__(self, ttl_seconds: int, clock: Clock = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._tokens: dict[str, IssuedToken] = {}

    def issue(self, client_id: str) -> str:
        now = self._clock()
        # Forget dead tokens so a long-running double does not grow without bound.
        self._tokens = {t: rec for t, rec in self._tokens.items() if rec.expires_at > now}
        token = secrets.token_urlsafe(21)  # 28 characters, like Amadeus's
        self._tokens[token] = IssuedToken(client_id, now + self._ttl)
        return token

    def client_for(self, token: str) -> str | None:
        """The client a live token belongs to, or None for an unknown or expired token."""
        record = self._tokens.get(token)
        if record is None or record.expires_at <= self._clock():
            return None
        return record.client_id

    def expire_all(self) -> int:
        now = self._clock()
        live = [rec for rec in self._tokens.values() if rec.expires_at > now]
        for record in live:
            record.expires_at = now
        return len(live)

    def active(self) -> int:
        now = self._clock()
        return sum(1 for rec in self._tokens.values() if rec.expires_at > now)


class RateLimiter:
    """Exact per-client limits: at most `per_second` admitted in any 1 s, and `min_interval`
    between two admitted requests. Rejected requests do not count against the client."""

    def __init__(self, per_second: int, min_interval: float, clock: Clock = time.monotonic) -> None:
        self.per_second = per_second
        self.min_interval = min_interval
        self._clock = clock
        self._admitted: dict[str, deque[float]] = {}
        self._last: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self.per_second > 0 or self.min_interval > 0

    def admit(self, client_id: str) -> bool:
        if not self.enabled:
            return True
        now = self._clock()
        last = self._last.get(client_id)
        if self.min_interval > 0 and last is not None and now - last < self.min_interval:
            return False
        window = self._admitted.setdefault(client_id, deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if self.per_second > 0 and len(window) >= self.per_second:
            return False
        window.append(now)
        self._last[client_id] = now
        return True

    def reset(self) -> None:
        self._admitted.clear()
        self._last.clear()


class FailNext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=0, le=10_000)
    # A path prefix such as "/v2/shopping/flight-offers"; absent = every non-admin call.
    path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9/_-]*$")


class FaultsUpdate(BaseModel):
    """Body of POST /admin/faults. Only the fields present change; `null` clears a switch."""

    model_config = ConfigDict(extra="forbid")

    latency_seconds: float | None = Field(default=None, ge=0, le=120)
    fail_next: FailNext | None = None
    force_429: int | None = Field(default=None, ge=0, le=10_000)
    expire_tokens: bool = False
    pricing_price_discrepancy: bool | None = None
    booking_failure_code: Literal[34651, 36870, 37200] | None = None
    # "; charset=utf-8" after every JSON media type, which the real API never sends.
    charset_parameter: bool | None = None


ALL_PATHS = "*"


@dataclass(slots=True)
class FaultState:
    latency_seconds: float = 0.0
    fail_next: dict[str, int] = field(default_factory=dict)
    force_429: int = 0
    pricing_price_discrepancy: bool = False
    booking_failure_code: int | None = None
    charset_parameter: bool = False

    def apply(self, update: FaultsUpdate) -> None:
        given = update.model_fields_set
        if "latency_seconds" in given:
            self.latency_seconds = update.latency_seconds or 0.0
        if "fail_next" in given:
            if update.fail_next is None:
                self.fail_next.clear()
            else:
                self.fail_next[update.fail_next.path or ALL_PATHS] = update.fail_next.count
                self.fail_next = {k: v for k, v in self.fail_next.items() if v > 0}
        if "force_429" in given:
            self.force_429 = update.force_429 or 0
        if "pricing_price_discrepancy" in given:
            self.pricing_price_discrepancy = bool(update.pricing_price_discrepancy)
        if "booking_failure_code" in given:
            self.booking_failure_code = update.booking_failure_code
        if "charset_parameter" in given:
            self.charset_parameter = bool(update.charset_parameter)

    def take_failure(self, path: str) -> bool:
        """Consume one injected 500 for this path, if one is armed (the specific path first)."""
        for key, remaining in self.fail_next.items():
            if key != ALL_PATHS and (path == key or path.startswith(key.rstrip("/") + "/")):
                self._consume(key, remaining)
                return True
        remaining = self.fail_next.get(ALL_PATHS, 0)
        if remaining:
            self._consume(ALL_PATHS, remaining)
            return True
        return False

    def _consume(self, key: str, remaining: int) -> None:
        if remaining <= 1:
            del self.fail_next[key]
        else:
            self.fail_next[key] = remaining - 1

    def take_forced_429(self) -> bool:
        if self.force_429 > 0:
            self.force_429 -= 1
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency_seconds": self.latency_seconds,
            "fail_next": dict(self.fail_next),
            "force_429": self.force_429,
            "pricing_price_discrepancy": self.pricing_price_discrepancy,
            "booking_failure_code": self.booking_failure_code,
            "charset_parameter": self.charset_parameter,
        }


@dataclass(slots=True)
class Stats:
    """Counted as requests arrive (whatever their answer) and as answers leave."""

    token_requests: int = 0
    tokens_issued: int = 0
    search_requests: int = 0
    pricing_requests: int = 0
    order_requests: int = 0
    orders_created: int = 0
    unauthorized_401: int = 0
    rate_limited_429: int = 0
    server_errors_500: int = 0
    bad_requests_400: int = 0

    def count_status(self, status: int) -> None:
        if status == 400:
            self.bad_requests_400 += 1
        elif status == 401:
            self.unauthorized_401 += 1
        elif status == 429:
            self.rate_limited_429 += 1
        elif status >= 500:
            self.server_errors_500 += 1

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
