from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from axiom_shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    port: int = Field(
        default=8082, ge=0, le=65535, validation_alias=AliasChoices("PAYMENTS_PORT", "PORT")
    )
    #: The payments DB: a libSQL file locally, `libsql://...` (Turso) in production.
    turso_db_url: str = "file:var/payments.db"
    turso_db_auth_token: SecretStr | None = None
    solana_rpc_url: str = "http://127.0.0.1:8899"
