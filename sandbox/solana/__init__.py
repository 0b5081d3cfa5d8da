"""Solana sandbox: a JSON-RPC validator stand-in over LiteSVM, with Helius-style webhooks."""

from sandbox.solana.config import SandboxConfig
from sandbox.solana.server import create_app, main

__all__ = ["SandboxConfig", "create_app", "main"]
