from __future__ import annotations

from pydantic import AliasChoices, Field

from axiom_gateway.ratelimit_settings import RateLimitSettings


class GatewaySettings(RateLimitSettings):
    """The gateway's settings; the rate limiter's come from `RateLimitSettings`."""

    service_name: str = "gateway"
    port: int = Field(
        default=8080, ge=0, le=65535, validation_alias=AliasChoices("GATEWAY_PORT", "PORT")
    )
    #: The public https origin (e.g. https://pay.axiomid.app) used for absolute URLs handed to
    #: wallets; unset → derived from the request's Host.
    public_base_url: str | None = None
