from __future__ import annotations

from typing import Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from axiom_shared.schemas import Pubkey
from axiom_shared.settings import DEV_MERCHANT_WALLET, ServiceSettings
from axiom_shared.spl_token import MAINNET_USDC_MINT, USDC_DECIMALS

__all__ = ["DEV_MERCHANT_WALLET", "PaymentsSettings"]


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    port: int = Field(
        default=8082, ge=0, le=65535, validation_alias=AliasChoices("PAYMENTS_PORT", "PORT")
    )
    #: The payments DB: a libSQL file locally, `libsql://...` (Turso) in production.
    turso_db_url: str = "file:var/payments.db"
    turso_db_auth_token: SecretStr | None = None
    #: With a `file:` TURSO_DB_URL: keep that file as an embedded replica of this Turso
    #: database (`libsql://...`): reads are local, writes go to the primary.
    turso_sync_url: str | None = None
    solana_rpc_url: str = "http://127.0.0.1:8899"
    solana_rpc_timeout: float = Field(default=5.0, gt=0)
    #: Findings (from the verifier) applied at once by one replica; their writes are
    #: group-committed.
    findings_concurrency: int = Field(default=64, ge=1, le=1024)
    #: Requests (create, get, match) handled at once by one replica.
    max_concurrency: int = Field(default=128, ge=1, le=10_000)
    #: Seconds a fetched blockhash is handed out for (one slot); at most one fetch per period.
    blockhash_max_age: float = Field(default=0.4, gt=0, le=30)
    #: Where payments are paid to (a wallet address, never a token account). Required outside
    #: development: there is no silent default address.
    merchant_wallet: Pubkey | None = None
    #: Optional merchant fee-payer key (base58 or a JSON byte array): when set, transaction
    #: requests are co-signed by the merchant, so the customer needs no SOL for fees.
    solana_private_key: SecretStr | None = None
    #: The SPL token sold as USDC (catalogue items with `"currency": "USDC"`): Circle's
    #: mainnet mint by default; `make run` and the tests use the sandbox's test mint.
    usdc_mint: Pubkey = MAINNET_USDC_MINT
    usdc_decimals: int = Field(default=USDC_DECIMALS, ge=0, le=18)
    #: Refund requests never landed expire after this (then the money is due again); one paid
    #: later is still seen and counted within EXPIRED_LOOKBACK_SECONDS.
    refund_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    #: Hot-wallet refunds (off by default): the key of a wallet the payments service signs
    #: refunds from by itself (base58 or a JSON byte array; or REFUND_PRIVATE_KEY_FILE). Keep
    #: it a small float wallet, never the merchant's main one. Unset: every refund is a request
    #: the merchant's own wallet signs.
    refund_private_key: SecretStr | None = None
    #: Hot-wallet caps, per currency, in base units: per refund and per 24 h (requested or
    #: landed hot-wallet refunds count). 0.1 SOL and 100 USDC per refund, 1 SOL and 1,000 USDC
    #: a day by default.
    refund_max_lamports: int = Field(default=100_000_000, ge=0)
    refund_daily_max_lamports: int = Field(default=1_000_000_000, ge=0)
    refund_max_usdc: int = Field(default=100_000_000, ge=0)
    refund_daily_max_usdc: int = Field(default=1_000_000_000, ge=0)
    #: The catalogue file; unset → the one shipped with the service.
    catalog_path: str | None = None
    payment_ttl_seconds: int = Field(default=900, ge=1, le=86400)
    #: How often pending payments are scanned on chain, expired ones swept.
    reconcile_interval_seconds: float = Field(default=5.0, gt=0)
    #: Expired payments are still scanned this long after expiry (a late payment is honoured).
    expired_lookback_seconds: float = Field(default=3600.0, ge=0)
    #: Open payments handed to the verifier per reconcile tick (the least recently scanned
    #: first; every open payment takes its turn).
    reconcile_batch: int = Field(default=500, ge=1, le=100_000)

    @field_validator("merchant_wallet", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _merchant_wallet_outside_development(self) -> Self:
        if self.merchant_wallet is None and not self.development:
            raise ValueError(
                "MERCHANT_WALLET must be set (the wallet payments are paid to); only"
                " ENVIRONMENT=development falls back to a development address"
            )
        return self

    def merchant(self, fee_payer: str | None) -> str:
        """Where payments go: MERCHANT_WALLET; in development, else the fee payer's own
        address, else the development address."""
        return self.merchant_wallet or fee_payer or DEV_MERCHANT_WALLET
