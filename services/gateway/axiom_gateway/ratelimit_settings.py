"""The rate limiter's settings; `GatewaySettings` derives from `RateLimitSettings`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from axiom_shared.settings import Networks, ServiceSettings


class RateLimitRule(BaseModel):
    """`limit` requests per `window` seconds per client on every path starting with `prefix`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(pattern=r"^/")
    #: The HTTP methods it counts (empty: every method).
    methods: frozenset[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]] = frozenset()
    limit: int = Field(ge=1, le=1_000_000)
    #: Seconds; the sliding window's length.
    window: float = Field(gt=0, le=86_400)
    #: The policy name shown in the `RateLimit-Policy`/`RateLimit` headers (an sf-string).
    policy: str = Field(default="default", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    def applies(self, path: str, method: str) -> bool:
        return path.startswith(self.prefix) and (not self.methods or method in self.methods)


def _default_rate_limits() -> list[RateLimitRule]:
    return [RateLimitRule(prefix="/api/proxy/", limit=10, window=10)]


def _default_payment_rate_limit() -> RateLimitRule:
    return RateLimitRule(
        prefix="/api/pay/", methods=frozenset({"POST"}), limit=30, window=60, policy="payments"
    )


def _default_account_rate_limit() -> RateLimitRule:
    return RateLimitRule(
        prefix="/api/pay/req/", methods=frozenset({"POST"}), limit=10, window=60, policy="account"
    )


class RateLimitSettings(ServiceSettings):
    #: JSON list, e.g. `RATE_LIMITS='[{"prefix": "/api/proxy/", "limit": 10, "window": 10}]'`.
    #: The longest matching prefix applies; a path matching none is not limited.
    rate_limits: list[RateLimitRule] = Field(default_factory=_default_rate_limits)
    #: Payment writes (`POST /api/pay/*`: creating payments, transaction requests, verify) per
    #: client: whoever creates unpaid payments by the thousand is refused, not the checkout.
    payment_rate_limit: RateLimitRule = Field(default_factory=_default_payment_rate_limit)
    #: Transaction requests per payer `account` (whoever asks): the merchant's fee-payer key
    #: signs each one, so one account cannot have it sign without end.
    account_rate_limit: RateLimitRule = Field(default_factory=_default_account_rate_limit)
    #: Requests carrying this token in `admin_token_header` are not counted (unset: no bypass).
    admin_token: SecretStr | None = None
    #: Also accepted while `admin_token` rotates: set it, deploy, hand it out, promote it.
    admin_token_next: SecretStr | None = None
    admin_token_header: str = "X-Admin-Token"  # noqa: S105 - a header name, not a secret
    #: Peers (CIDRs, comma-separated) whose forwarded-for and user-id headers we believe.
    trusted_proxies: Networks = []
    #: Which header our trusted proxies append the client's address to.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    #: The authenticated caller, as set by the trusted auth layer in front of us.
    user_id_header: str = "X-User-Id"
    #: IPv6 clients are counted per network of this size (one host usually holds a whole /64).
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    #: Longest wait for the limiter's Redis round trip before the in-memory fallback decides.
    rate_limit_redis_timeout: float = Field(default=0.1, gt=0, le=1.0)
    #: After a Redis failure, how long the fallback decides alone before Redis is tried again.
    rate_limit_redis_retry_interval: float = Field(default=1.0, ge=0, le=60)
    rate_limit_redis_prefix: str = "axiom:ratelimit"
    #: Clients the in-memory fallback remembers at most (least recently seen are evicted).
    rate_limit_fallback_max_clients: int = Field(default=10_000, ge=1)

    @field_validator("forwarded_header", mode="before")
    @classmethod
    def _lower_header(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("rate_limits")
    @classmethod
    def _unique_prefixes(cls, rules: list[RateLimitRule]) -> list[RateLimitRule]:
        prefixes = [rule.prefix for rule in rules]
        if len(prefixes) != len(set(prefixes)):
            raise ValueError("each rate-limit prefix may appear once")
        return rules
