from __future__ import annotations

from pydantic import AliasChoices, Field

from axiom_shared.settings import ServiceSettings


class VerifierSettings(ServiceSettings):
    service_name: str = "verifier"
    port: int = Field(
        default=8083, ge=0, le=65535, validation_alias=AliasChoices("VERIFIER_PORT", "PORT")
    )
    solana_rpc_url: str = "http://127.0.0.1:8899"
    solana_rpc_timeout: float = Field(default=5.0, gt=0)
    #: A transaction whose block time is this much before the payment's creation is refused.
    clock_skew_seconds: float = Field(default=120.0, ge=0)
    #: Candidates handled at once per replica (each waits on the RPC most of its time).
    concurrency: int = Field(default=32, ge=1, le=1024)
    #: Multiplies the redelivery delays of "not finalized yet" (tests shrink them).
    retry_delay_scale: float = Field(default=1.0, gt=0, le=10)
