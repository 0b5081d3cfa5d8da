from __future__ import annotations

from pydantic import AliasChoices, Field

from axiom_shared.settings import ServiceSettings


class VerifierSettings(ServiceSettings):
    service_name: str = "verifier"
    port: int = Field(
        default=8083, ge=0, le=65535, validation_alias=AliasChoices("VERIFIER_PORT", "PORT")
    )
    solana_rpc_url: str = "http://127.0.0.1:8899"
