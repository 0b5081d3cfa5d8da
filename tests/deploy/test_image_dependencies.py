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
    assert "--require-hashes --no-deps -r locks/libsql-client.txt" in text
    assert set(locked(LOCKS / "libsql-client.txt")) == {"libsql-client"}


LOCKS = ROOT / "deploy" / "locks"


def locked(path: Path) -> dict[str, str]:
    """name → version of a hash-pinned lock, checking that every entry has hashes."""
    found: dict[str, str] = {}
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement, _, hashes = line.partition(" ")
        name, _, version = requirement.partition("==")
        assert version, f"{path.name}: {requirement} is not pinned"
        assert "--hash=sha256:" in hashes, f"{path.name}: {requirement} has no hash"
        found[_name(name)] = version
    return found


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, _, version = line.strip().partition("==")
        if version:
            pins[_name(name)] = version
    return pins


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_image_lock_is_its_closure_at_the_constrained_versions(service: str) -> None:
    """deploy/locks/<service>.txt holds exactly the third-party closure of shared/ and the
    service (no more: the image carries nothing its service does not import), at the versions
    of constraints.txt (`bash deploy/scripts/lock.sh` rewrites it)."""
    lock = locked(LOCKS / f"{service}.txt")
    wanted = {n for n in closure("axiom-shared", SERVICES[service]) if not n.startswith("axiom-")}
    assert set(lock) == wanted
    pins = constraints()
    assert {n: v for n, v in lock.items() if pins.get(n) != v} == {}


def test_the_build_lock_holds_setuptools_only() -> None:
    assert set(locked(LOCKS / "build.txt")) == {"setuptools"}
