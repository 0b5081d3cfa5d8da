from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator

from axiom_shared.schemas import Pubkey
from axiom_shared.settings import DEV_MERCHANT_WALLET, ServiceSettings


class VerifierSettings(ServiceSettings):
    service_name: str = "verifier"
    port: int = Field(
        default=8083, ge=0, le=65535, validation_alias=AliasChoices("VERIFIER_PORT", "PORT")
    )
    solana_rpc_url: str = "http://127.0.0.1:8899"
    solana_rpc_timeout: float = Field(default=5.0, gt=0)
    #: The node's PubSub WebSocket, for the `confirmed` watch that shows a payment as seen;
    #: unset → the RPC URL's host on its port + 1 (ws/wss), as a validator serves it.
    solana_ws_url: str | None = None
    #: The wallet payments are paid to: the `confirmed` watch follows the transactions that
    #: mention it. Unset → the development address in development, and no watch elsewhere
    #: (payments are still decided at `finalized`, only the early "seen" is missing).
    merchant_wallet: Pubkey | None = None
    #: Show payments as seen at `confirmed` (display only; nothing is decided there).
    seen_watch: bool = True
    #: A transaction whose block time is this much before the payment's creation is refused.
    clock_skew_seconds: float = Field(default=120.0, ge=0)
    #: Candidates handled at once per replica (each waits on the RPC most of its time).
    concurrency: int = Field(default=32, ge=1, le=1024)
    #: Multiplies the redelivery delays of "not finalized yet" (tests shrink them).
    retry_delay_scale: float = Field(default=1.0, gt=0, le=10)

    @field_validator("merchant_wallet", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def watched_wallet(self) -> str | None:
        """The merchant wallet the `confirmed` watch follows, if any."""
        if self.merchant_wallet is not None:
            return self.merchant_wallet
        return DEV_MERCHANT_WALLET if self.development else None

    def pubsub_url(self) -> str:
        if self.solana_ws_url:
            return self.solana_ws_url
        parts = urlsplit(self.solana_rpc_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        netloc = parts.netloc
        if parts.port is not None:
            netloc = netloc.rsplit(":", 1)[0] + f":{parts.port + 1}"
        # An RPC provider's key travels in the query: the WebSocket needs it too.
        return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
