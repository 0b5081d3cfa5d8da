from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from axiom_shared.schemas import Pubkey
from axiom_shared.settings import ServiceSettings

#: A development merchant address (from a public seed: it must never hold real funds). Set
#: MERCHANT_WALLET in every real deployment.
DEV_MERCHANT_WALLET = "BDKAK8eCzXZrwWaYnj9LTTTD8RZB9XXhDMvqGobQqcj5"


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    port: int = Field(
        default=8082, ge=0, le=65535, validation_alias=AliasChoices("PAYMENTS_PORT", "PORT")
    )
    #: The payments DB: a libSQL file locally, `libsql://...` (Turso) in production.
    turso_db_url: str = "file:var/payments.db"
    turso_db_auth_token: SecretStr | None = None
    solana_rpc_url: str = "http://127.0.0.1:8899"
    solana_rpc_timeout: float = Field(default=5.0, gt=0)
    #: Where payments are paid to (a wallet address, never a token account).
    merchant_wallet: Pubkey | None = None
    #: Optional merchant fee-payer key (base58 or a JSON byte array): when set, transaction
    #: requests are co-signed by the merchant, so the customer needs no SOL for fees.
    solana_private_key: SecretStr | None = None
    #: The catalogue file; unset → the one shipped with the service.
    catalog_path: str | None = None
    payment_ttl_seconds: int = Field(default=900, ge=1, le=86400)
    #: How often pending payments are scanned on chain, expired ones swept.
    reconcile_interval_seconds: float = Field(default=5.0, gt=0)
    #: Expired payments are still scanned this long after expiry (a late payment is honoured).
    expired_lookback_seconds: float = Field(default=3600.0, ge=0)
