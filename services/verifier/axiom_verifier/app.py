"""The verifier: stateless; turns payment candidates into verdicts by reading the chain at
`finalized` commitment. Replicas share one durable consumer."""

from __future__ import annotations

from aiohttp import web

from axiom_shared.service import create_service_app, run_service
from axiom_verifier.settings import VerifierSettings


def create_app(settings: VerifierSettings) -> web.Application:
    return create_service_app(settings)


def main() -> None:
    run_service(VerifierSettings, create_app)
