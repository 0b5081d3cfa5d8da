from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from axiom_gateway.features import FeatureFlagSettings
from axiom_gateway.ratelimit_settings import RateLimitSettings
from axiom_shared.service import typed_settings_key


class GatewaySettings(RateLimitSettings, FeatureFlagSettings):
    """The gateway's settings; the rate limiter's come from `RateLimitSettings`, the feature
    flags (`FEATURE_*`) from `FeatureFlagSettings`."""

    service_name: str = "gateway"
    port: int = Field(
        default=8080, ge=0, le=65535, validation_alias=AliasChoices("GATEWAY_PORT", "PORT")
    )
    #: The public https origin (e.g. https://pay.axiomid.app) used for absolute URLs handed to
    #: wallets; unset → derived from the request's Host.
    public_base_url: str | None = None
    #: The `authHeader` given to Helius; webhooks are refused while it is unset. `_NEXT` is
    #: also accepted, so the secret rotates without losing a webhook.
    helius_webhook_secret: SecretStr | None = None
    helius_webhook_secret_next: SecretStr | None = None
    #: Largest webhook body accepted (a Helius batch is an array of items).
    webhook_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Paymob's HMAC secret (dashboard, profile); callbacks are refused while it is unset.
    #: `_NEXT` is also accepted, so the secret rotates without losing a callback.
    paymob_hmac_secret: SecretStr | None = None
    paymob_hmac_secret_next: SecretStr | None = None
    #: Largest Paymob callback body accepted (a real one is a few KB).
    paymob_max_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    #: The notifier whose SSE status streams the gateway passes through to browsers.
    notifier_url: str = "http://127.0.0.1:8081"
    #: How long the gateway waits for the amadeus-proxy. Longer than the proxy's worst case
    #: (attempts * (pacing wait + upstream timeout) + a token refresh: 3 * (2 + 8) + 10 s with
    #: its defaults), so that a slow answer is never cut short here; a booking cut short
    #: anyway is safe to retry with the same Idempotency-Key.
    amadeus_request_timeout: float = Field(default=45.0, gt=0, le=300)


settings_key = typed_settings_key(GatewaySettings)
