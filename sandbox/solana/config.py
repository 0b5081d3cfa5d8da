"""Settings of the Solana sandbox: built once at start-up from the environment and the CLI."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from sandbox.solana.faults import FaultSettings

WebhookCommitment = Literal["processed", "confirmed", "finalized"]
_ENV_PREFIX = "SOLANA_SANDBOX_"


@dataclass(frozen=True)
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 8899
    # The PubSub WebSocket; None means RPC port + 1, as a validator serves it (8900), and a
    # free port when `port` is 0 or that one is taken. 0 always picks a free port.
    pubsub_port: int | None = None
    # Notifications queued for one WebSocket connection; a client that falls this far behind
    # is disconnected, so that it never holds up the chain or the other clients.
    pubsub_max_queued: int = 4096
    # Seconds per slot on the automatic clock; 0 means slots only move via /admin/advance.
    slot_interval: float = 0.4
    # A transaction is `confirmed` this many slots after its own, `finalized` after finality_depth.
    confirmation_depth: int = 1
    finality_depth: int = 32
    # A blockhash is usable this many slots after the slot that made it (MAX_PROCESSING_AGE).
    blockhash_max_age: int = 150
    # Slots a signature stays in the status cache (searchTransactionHistory=false sees only these).
    status_cache_slots: int = 300
    webhook_commitment: WebhookCommitment = "finalized"
    webhook_max_attempts: int = 3
    webhook_retry_backoff: float = 1.0
    webhook_timeout: float = 5.0
    # When set, /v0/webhooks requires ?api-key= to equal it (as Helius does).
    helius_api_key: str | None = None
    faucet_lamports: int = 500_000_000 * 1_000_000_000
    log_level: str = "INFO"
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if self.slot_interval < 0:
            raise ValueError("slot_interval must be >= 0")
        if self.finality_depth < 0 or self.confirmation_depth < 0:
            raise ValueError("confirmation_depth and finality_depth must be >= 0")
        if self.confirmation_depth > self.finality_depth:
            raise ValueError("confirmation_depth cannot exceed finality_depth")
        if self.webhook_commitment not in ("processed", "confirmed", "finalized"):
            raise ValueError(f"bad webhook_commitment {self.webhook_commitment!r}")
        if self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be >= 1")
        if self.pubsub_port is not None and not 0 <= self.pubsub_port <= 65535:
            raise ValueError("pubsub_port must be in [0, 65535]")
        if self.pubsub_max_queued < 1:
            raise ValueError("pubsub_max_queued must be >= 1")

    @property
    def pubsub_port_wanted(self) -> int:
        """The port the PubSub server asks for first (0: any free one)."""
        if self.pubsub_port is not None:
            return self.pubsub_port
        return self.port + 1 if 0 < self.port < 65535 else 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Read SOLANA_SANDBOX_<FIELD> (and SOLANA_SANDBOX_FAULT_<FIELD>) variables."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, kind in _FIELD_TYPES.items():
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = _convert(kind, raw)
        fault_values: dict[str, object] = {}
        for key, raw in env.items():
            if key.startswith(_ENV_PREFIX + "FAULT_") and raw != "":
                fault_values[key.removeprefix(_ENV_PREFIX + "FAULT_").lower()] = raw
        faults = FaultSettings().updated(fault_values) if fault_values else FaultSettings()
        return cls(**values, faults=faults)  # type: ignore[arg-type]

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> SandboxConfig:
        """Environment first, then command-line options override it."""
        base = cls.from_env(environ)
        parser = argparse.ArgumentParser(
            prog="python -m sandbox.solana",
            description="Solana JSON-RPC sandbox over LiteSVM, with Helius-style webhooks.",
        )
        for name, kind in _FIELD_TYPES.items():
            parser.add_argument(
                "--" + name.replace("_", "-"),
                type=kind,
                default=None,
                help=f"(env {_ENV_PREFIX}{name.upper()}; default {getattr(base, name)!r})",
            )
        parser.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="default fault switch, e.g. --fault webhook_drop_probability=0.5 (repeatable)",
        )
        ns = parser.parse_args(argv)
        overrides = {
            name: getattr(ns, name) for name in _FIELD_TYPES if getattr(ns, name) is not None
        }
        faults = base.faults
        if ns.fault:
            pairs = dict(item.split("=", 1) for item in ns.fault if "=" in item)
            faults = faults.updated(pairs)
        return replace(base, **overrides, faults=faults)


def _convert(kind: type, raw: str) -> object:
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return kind(raw)


_FIELD_TYPES: dict[str, type] = {
    "host": str,
    "port": int,
    "pubsub_port": int,
    "pubsub_max_queued": int,
    "slot_interval": float,
    "confirmation_depth": int,
    "finality_depth": int,
    "blockhash_max_age": int,
    "status_cache_slots": int,
    "webhook_commitment": str,
    "webhook_max_attempts": int,
    "webhook_retry_backoff": float,
    "webhook_timeout": float,
    "helius_api_key": str,
    "faucet_lamports": int,
    "log_level": str,
}
