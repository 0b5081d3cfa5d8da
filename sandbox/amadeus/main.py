"""`python -m sandbox.amadeus`: run the double until interrupted."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from axiom_shared.logging import configure_logging, get_logger
from sandbox.amadeus.app import create_app
from sandbox.amadeus.config import AmadeusSandboxConfig


def main(argv: Sequence[str] | None = None) -> None:
    config = AmadeusSandboxConfig.from_sources(argv)
    configure_logging("amadeus-sandbox", config.log_level)
    get_logger("sandbox.amadeus").info(
        "amadeus sandbox starting",
        url=f"http://{config.host}:{config.port}",
        client_id=config.client_id,
        expiry_seconds=config.token_ttl_seconds,
        rate_limit_per_second=config.rate_limit_per_second,
        min_interval_seconds=config.min_interval_seconds,
    )
    web.run_app(create_app(config), host=config.host, port=config.port, print=None)
