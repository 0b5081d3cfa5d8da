from __future__ import annotations

from typing import Self

from pydantic import AliasChoices, Field, SecretStr, model_validator

from axiom_shared.settings import ServiceSettings

# The Amadeus double's well-known local credentials, so that `make run` works with nothing set.
SANDBOX_CLIENT_ID = "axiomid-sandbox-client"
SANDBOX_CLIENT_SECRET = "axiomid-sandbox-secret"  # noqa: S105 - a local double's default


class AmadeusProxySettings(ServiceSettings):
    service_name: str = "amadeus-proxy"
    port: int = Field(
        default=8084, ge=0, le=65535, validation_alias=AliasChoices("AMADEUS_PROXY_PORT", "PORT")
    )
    #: The legacy bookings DB (D1-compatible SQLite / libSQL) holding `agent_transactions`.
    bookings_db_url: str = "file:var/bookings.db"
    bookings_db_auth_token: SecretStr | None = None
    #: With a `file:` BOOKINGS_DB_URL: keep that file as an embedded replica of this Turso
    #: database (`libsql://...`): reads are local, writes go to the primary.
    bookings_db_sync_url: str | None = None

    # --- upstream ---------------------------------------------------------------------------
    #: `https://test.api.amadeus.com` / `https://api.amadeus.com`; the local double by default.
    amadeus_base_url: str = "http://127.0.0.1:8890"
    amadeus_client_id: str = SANDBOX_CLIENT_ID
    amadeus_client_secret: SecretStr = SecretStr(SANDBOX_CLIENT_SECRET)
    #: Total time allowed for one upstream HTTP call (connect, send, answer).
    amadeus_timeout: float = Field(default=8.0, gt=0, le=60)

    # --- token cache ------------------------------------------------------------------------
    #: The cached token expires this long before Amadeus says it does.
    amadeus_token_margin: float = Field(default=60.0, ge=0)
    #: How long a replica waits for another one's token refresh before giving up (503).
    amadeus_token_wait: float = Field(default=10.0, gt=0)
    #: Namespace of our Redis keys (token, refresh lock, pacer), per Amadeus client id.
    amadeus_redis_prefix: str = "axiom:amadeus"

    # --- pacing (Amadeus test quota: 10 TPS and 100 ms apart; production: 40 TPS) ------------
    amadeus_rate_per_second: int = Field(default=10, ge=0)
    amadeus_min_interval: float = Field(default=0.1, ge=0)
    #: Kept on top of both rules, so that jitter between our send and Amadeus's clock does not
    #: turn a paced request into a 429.
    amadeus_pacing_guard: float = Field(default=0.01, ge=0)
    #: A request that would wait longer than this for its send slot is refused (429).
    amadeus_pacing_max_wait: float = Field(default=2.0, ge=0)

    # --- retries (search and pricing only: they are safe to repeat) ------------------------
    amadeus_search_attempts: int = Field(default=3, ge=1, le=6)
    amadeus_retry_base_delay: float = Field(default=0.1, ge=0)

    # --- booking ----------------------------------------------------------------------------
    #: A claim untouched for this long is abandoned (its worker died): an unsent one may be
    #: taken over, a sent one is declared "outcome unknown" for reconciliation.
    amadeus_booking_stale_after: float = Field(default=60.0, gt=0)
    #: Requests handled at once by one replica.
    amadeus_max_concurrency: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _stale_after_outlives_a_booking(self) -> Self:
        # Pricing or ordering: two paced attempts (the 401 retry) and one token refresh.
        longest = (
            2 * (self.amadeus_pacing_max_wait + self.amadeus_timeout) + self.amadeus_token_wait
        )
        if self.amadeus_booking_stale_after <= longest:
            raise ValueError(
                f"amadeus_booking_stale_after must exceed {longest:g} s (two paced upstream "
                "calls and a token refresh): a live booking must never look abandoned"
            )
        return self
