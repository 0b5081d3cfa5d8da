"""What a service image installs: the dependency closure of `axiom-shared` and the service's
package (what its Dockerfile's pip install resolves), read from the installed packages'
metadata. No image carries Sphinx (libsql-client declares a Sphinx theme by mistake: the
images that need it install it with --no-deps) or the Solana SDK the services do not import."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "gateway": "axiom-gateway",
    "payments": "axiom-payments",
    "verifier": "axiom-verifier",
    "amadeus-proxy": "axiom-amadeus-proxy",
    "notifier": "axiom-notifier",
}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(*roots: str) -> set[str]:
    seen: set[str] = set()
    todo = [_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            # Only what is installed without extras, on this platform.
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(_name(req.name))
    return seen


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_no_image_carries_sphinx_or_the_solana_sdk(service: str) -> None:
    installed = closure("axiom-shared", SERVICES[service])
    assert not {name for name in installed if name.startswith("sphinx")}, installed
    assert "solana" not in installed
    assert "libsql-client" not in installed  # installed with --no-deps where needed


@pytest.mark.parametrize("service", ["payments", "amadeus-proxy"])
def test_database_owners_install_the_remote_driver_without_its_stray_dependencies(
    service: str,
) -> None:
    text = (ROOT / "deploy" / "docker" / f"{service}.Dockerfile").read_text()
    assert "--no-deps -c constraints.txt libsql-client" in text
