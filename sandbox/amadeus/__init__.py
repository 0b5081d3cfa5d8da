"""A local double of the Amadeus Self-Service flight APIs (token, search, price, book)."""

from sandbox.amadeus.app import create_app
from sandbox.amadeus.config import AmadeusSandboxConfig

__all__ = ["AmadeusSandboxConfig", "create_app"]
