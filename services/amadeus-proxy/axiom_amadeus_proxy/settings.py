from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from axiom_shared.settings import ServiceSettings


class AmadeusProxySettings(ServiceSettings):
    service_name: str = "amadeus-proxy"
    port: int = Field(
        default=8084, ge=0, le=65535, validation_alias=AliasChoices("AMADEUS_PROXY_PORT", "PORT")
    )
    #: The legacy bookings DB (D1-compatible SQLite / libSQL) holding `agent_transactions`.
    bookings_db_url: str = "file:var/bookings.db"
    bookings_db_auth_token: SecretStr | None = None
