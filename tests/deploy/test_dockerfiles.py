"""The Dockerfiles, read by a parser (no Docker engine here): multi-stage, pinned base, a
numeric non-root USER last, HEALTHCHECK on /healthz, and no secret baked in."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.deploy.checks import DOCKER_DIR, ROOT, SERVICES, dockerfile_for, dockerfile_problems


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_dockerfile_follows_the_pattern(service: str) -> None:
    text = dockerfile_for(service).read_text(encoding="utf-8")
    assert dockerfile_problems(text, port=SERVICES[service]) == []


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_dockerfile_installs_its_own_package_and_runs_it(service: str) -> None:
    text = dockerfile_for(service).read_text(encoding="utf-8")
    module = "axiom_" + service.replace("-", "_")
    assert f"COPY services/{service}/ services/{service}/" in text
    assert f'ENTRYPOINT ["python", "-m", "{module}"]' in text
    assert (ROOT / "services" / service / module / "__main__.py").is_file()


def test_sandbox_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (DOCKER_DIR / "sandbox.Dockerfile").read_text(encoding="utf-8")
    # compose gives each stand-in its own healthcheck (they answer on different paths)
    assert dockerfile_problems(text, port=None, healthcheck=False) == []


def test_no_other_dockerfiles_than_one_per_service_and_the_sandbox() -> None:
    found = {p.name for p in DOCKER_DIR.glob("*.Dockerfile")}
    assert found == {f"{s}.Dockerfile" for s in SERVICES} | {"sandbox.Dockerfile"}


def test_dockerignore_keeps_local_secrets_and_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*") + 1 :].count("!shared/") == 1  # an allow-list, not a deny-list
    for pattern in ("**/.env", "**/*.db", "**/*.egg-info"):
        assert pattern in lines


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda t: t.replace("USER 10001:10001\n", ""), "final USER"),
        (lambda t: t.replace("USER 10001:10001", "USER root"), "final USER"),
        (
            lambda t: t.replace("HEALTHCHECK", "# HEALTHCHECK").replace("    CMD [", "# CMD ["),
            "HEALTHCHECK",
        ),
        (
            lambda t: t.replace(
                "python:3.11.14-slim-bookworm AS builder", "python:3.11-slim AS builder"
            ),
            "base image",
        ),
        (lambda t: t.split("# --- runtime")[0], "multi-stage"),
        (lambda t: t.replace("    HOST=0.0.0.0 \\\n", ""), "HOST=0.0.0.0"),
        (
            lambda t: t.replace("LOG_JSON=true", "LOG_JSON=true \\\n    ADMIN_TOKEN=hunter2"),
            "secret",
        ),
    ],
)
def test_the_dockerfile_check_notices_damage(damage: Callable[[str], str], expected: str) -> None:
    text = dockerfile_for("gateway").read_text(encoding="utf-8")
    damaged = damage(text)
    assert damaged != text
    problems = dockerfile_problems(damaged, port=SERVICES["gateway"])
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_images_install_only_from_hash_pinned_locks(service: str) -> None:
    """Every pip install of a service image either checks each file against its lock's
    sha256 (`--require-hashes`, nothing resolved beyond it) or uses no index at all (our own
    wheels); constraints.txt, which has no hashes, is not used."""
    text = dockerfile_for(service).read_text(encoding="utf-8")
    installs = [
        line.strip(" \\&")
        for line in text.replace("\\\n", " ").splitlines()
        for line in line.split("&&")
        if "pip install" in line
    ]
    assert installs, text
    for install in installs:
        locked = "--require-hashes" in install and "--no-deps" in install and "-r locks/" in install
        local = "--no-index" in install and "--no-deps" in install
        assert locked or local, install
    assert "constraints.txt" not in text
    assert f"COPY deploy/locks/{service}.txt" in text
