"""Settings of the Amadeus double, built at start-up from the environment and the command line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

DEFAULT_CLIENT_ID = "axiomid-sandbox-client"
DEFAULT_CLIENT_SECRET = "axiomid-sandbox-secret"  # noqa: S105 - a local double's well-known default


@dataclass(frozen=True, slots=True)
class AmadeusSandboxConfig:
    host: str = "127.0.0.1"
    port: int = 8890
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    # Amadeus answers expires_in=1799; tests set a second or two.
    token_ttl_seconds: int = 1799
    # Amadeus test limits: 10 transactions per second per client, one request per 100 ms.
    # 0 turns either rule off.
    rate_limit_per_second: int = 10
    min_interval_seconds: float = 0.1
    application_name: str = "axiomid-sandbox"
    log_level: str = "INFO"

    def without_rate_limit(self) -> AmadeusSandboxConfig:
        return replace(self, rate_limit_per_second=0, min_interval_seconds=0.0)

    @classmethod
    def from_sources(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> AmadeusSandboxConfig:
        """CLI flags win over AMADEUS_SANDBOX_* variables, which win over the defaults.

        The client id and secret fall back to AMADEUS_CLIENT_ID / AMADEUS_CLIENT_SECRET, the names
        the amadeus-proxy reads, so one environment configures both ends.
        """
        env = os.environ if environ is None else environ
        base = cls()

        def pick(name: str, fallback: str) -> str:
            return env.get(f"AMADEUS_SANDBOX_{name}", fallback)

        parser = argparse.ArgumentParser(
            prog="python -m sandbox.amadeus", description="Amadeus Self-Service API double"
        )
        parser.add_argument("--host", default=pick("HOST", base.host))
        parser.add_argument("--port", type=int, default=int(pick("PORT", str(base.port))))
        parser.add_argument(
            "--client-id",
            default=pick("CLIENT_ID", env.get("AMADEUS_CLIENT_ID", base.client_id)),
        )
        parser.add_argument(
            "--client-secret",
            default=pick("CLIENT_SECRET", env.get("AMADEUS_CLIENT_SECRET", base.client_secret)),
            help="prefer the environment: a flag shows in the process list",
        )
        parser.add_argument(
            "--token-ttl",
            type=int,
            default=int(pick("TOKEN_TTL", str(base.token_ttl_seconds))),
            help="token lifetime in seconds (expires_in)",
        )
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=int(pick("RATE_LIMIT", str(base.rate_limit_per_second))),
            help="requests per second per client; 0 = no limit",
        )
        parser.add_argument(
            "--min-interval",
            type=float,
            default=float(pick("MIN_INTERVAL", str(base.min_interval_seconds))),
            help="seconds required between two requests of a client; 0 = no limit",
        )
        parser.add_argument(
            "--no-rate-limit", action="store_true", help="turn both rate-limit rules off"
        )
        parser.add_argument("--log-level", default=pick("LOG_LEVEL", base.log_level))
        args = parser.parse_args(argv)
        config = cls(
            host=args.host,
            port=args.port,
            client_id=args.client_id,
            client_secret=args.client_secret,
            token_ttl_seconds=args.token_ttl,
            rate_limit_per_second=args.rate_limit,
            min_interval_seconds=args.min_interval,
            log_level=args.log_level,
        )
        return config.without_rate_limit() if args.no_rate_limit else config
