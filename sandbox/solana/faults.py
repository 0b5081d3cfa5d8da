"""Fault switches: what tests flip to make the chain's edges (webhooks, RPC) misbehave.

Every random choice comes from one seeded `random.Random`, so a run with a seed is repeatable.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

RpcFailureMode = Literal["http_503", "node_unhealthy"]
_RPC_FAILURE_MODES = ("http_503", "node_unhealthy")


class FaultError(ValueError):
    """A fault setting that does not exist or has a bad value."""


@dataclass(frozen=True)
class FaultSettings:
    # Webhooks: each batch is dropped (never sent) with this probability, or always.
    webhook_drop_probability: float = 0.0
    webhook_drop_all: bool = False
    # Each batch is sent this many times in all (1 = once; 3 = the same batch three times).
    webhook_duplicate: int = 1
    # Seconds to wait before sending each batch.
    webhook_delay_seconds: float = 0.0
    # Shuffle the items inside a batch, and hold batches back to release them out of order.
    webhook_reorder: bool = False
    # With reorder on: how many batches to hold before releasing them newest first, and how
    # long the oldest one may wait for company before the held ones go anyway.
    webhook_reorder_window: int = 2
    webhook_reorder_max_hold_seconds: float = 2.0
    # RPC: latency added to every JSON-RPC request, and the probability it fails.
    rpc_latency_seconds: float = 0.0
    rpc_failure_probability: float = 0.0
    rpc_failure_mode: RpcFailureMode = "http_503"
    # Block times as the RPC reports them: shifted by this many seconds (a node whose clock
    # estimate is off), and null in getTransaction/getSignaturesForAddress answers (as real
    # nodes answer for some slots; getBlockTime still answers).
    block_time_offset_seconds: int = 0
    null_block_time: bool = False
    # Seed of the random choices above; None = not reproducible.
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("webhook_drop_probability", "rpc_failure_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FaultError(f"{name} must be within [0, 1]")
        for name in (
            "webhook_delay_seconds",
            "rpc_latency_seconds",
            "webhook_reorder_max_hold_seconds",
        ):
            if getattr(self, name) < 0:
                raise FaultError(f"{name} must be >= 0")
        if self.webhook_duplicate < 1:
            raise FaultError("webhook_duplicate must be >= 1")
        if self.webhook_reorder_window < 1:
            raise FaultError("webhook_reorder_window must be >= 1")
        if self.rpc_failure_mode not in _RPC_FAILURE_MODES:
            raise FaultError(f"rpc_failure_mode must be one of {_RPC_FAILURE_MODES}")

    def updated(self, changes: Mapping[str, Any]) -> FaultSettings:
        """A copy with `changes` applied; values may be JSON values or strings (env, CLI)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        converted: dict[str, Any] = {}
        for name, raw in changes.items():
            if name not in fields:
                raise FaultError(f"unknown fault setting {name!r}")
            converted[name] = _coerce(name, getattr(FaultSettings(), name), raw)
        try:
            return dataclasses.replace(self, **converted)
        except TypeError as exc:  # pragma: no cover - guarded by the field check above
            raise FaultError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, default: Any, raw: Any) -> Any:
    if name == "seed":
        if raw is None or raw == "":
            return None
        return _as_int(name, raw)
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise FaultError(f"{name} must be a boolean")
    if isinstance(default, int):
        return _as_int(name, raw)
    if isinstance(default, float):
        if isinstance(raw, bool):
            raise FaultError(f"{name} must be a number")
        try:
            return float(raw)
        except (TypeError, ValueError) as exc:
            raise FaultError(f"{name} must be a number") from exc
    if not isinstance(raw, str):
        raise FaultError(f"{name} must be a string")
    return raw


def _as_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise FaultError(f"{name} must be an integer")
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise FaultError(f"{name} must be an integer") from exc


class FaultInjector:
    """The live fault settings and the random source every fault decision draws from."""

    def __init__(self, settings: FaultSettings) -> None:
        self._defaults = settings
        self.settings = settings
        self.rng = random.Random(settings.seed)

    def update(self, changes: Mapping[str, Any]) -> FaultSettings:
        self.settings = self.settings.updated(changes)
        if "seed" in changes:
            self.rng = random.Random(self.settings.seed)
        return self.settings

    def reset(self) -> FaultSettings:
        self.settings = self._defaults
        self.rng = random.Random(self.settings.seed)
        return self.settings

    def chance(self, probability: float) -> bool:
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return self.rng.random() < probability

    def drop_webhook(self) -> bool:
        return self.settings.webhook_drop_all or self.chance(self.settings.webhook_drop_probability)

    def fail_rpc(self) -> bool:
        return self.chance(self.settings.rpc_failure_probability)
