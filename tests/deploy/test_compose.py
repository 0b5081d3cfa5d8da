"""deploy/compose.yaml, offline: valid against the Compose Specification's JSON schema
(vendored under deploy/schemas/), and our rules: healthchecks, resource limits, non-root images,
only the gateway published, no literal secrets; .env.example lists every setting."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from axiom_shared.nats_permissions import server_config, write_server_files
from sandbox.infra import find_binary
from tests.deploy.checks import (
    COMPOSE_FILE,
    DEPLOY,
    ENV_EXAMPLE,
    ROOT,
    SERVICES,
    compose_problems,
    env_example_problems,
    load_yaml_documents,
    readme_settings,
)

SCHEMA_FILE = DEPLOY / "schemas" / "compose-spec" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_yaml_documents(COMPOSE_FILE)
    return doc


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_check_is_not_vacuous(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["healthcheck"]["interval"] = 10  # must be a duration string
    broken["services"]["payments"]["restrat"] = "always"
    errors = schema_errors(broken)
    assert any("restrat" in e for e in errors), errors
    assert any("interval" in e for e in errors), errors


def test_compose_follows_our_rules(compose: dict[str, Any]) -> None:
    assert compose_problems(compose) == []


def test_infrastructure_is_there_with_persistent_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats = services["nats"]
    assert nats["image"].startswith("nats:2.15.")
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    assert "8222/healthz" in " ".join(nats["healthcheck"]["test"])
    assert services["libsql"]["image"].startswith("ghcr.io/tursodatabase/libsql-server:")
    assert services["redis"]["image"].startswith("redis:")
    mounted = {
        volume.split(":")[0] for svc in services.values() for volume in svc.get("volumes", [])
    }
    assert (
        mounted
        == set(compose["volumes"])
        == {
            "nats-data",
            "redis-data",
            "libsql-data",
            "bookings-data",
        }
    )


def test_sandboxes_are_optional_dev_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["solana-sandbox"]["profiles"] == ["sandbox"]
    assert services["amadeus-sandbox"]["profiles"] == ["sandbox"]
    assert services["solana-sandbox"]["command"][:1] == ["sandbox.solana"]
    assert services["amadeus-sandbox"]["command"][:1] == ["sandbox.amadeus"]
    for name in SERVICES:  # a service never waits for a sandbox that is not started
        for dep, cond in services[name].get("depends_on", {}).items():
            if services[dep].get("profiles"):
                assert cond.get("required") is False, (name, dep)


def test_services_start_after_their_dependencies_are_healthy(compose: dict[str, Any]) -> None:
    needs = {
        "gateway": {"nats", "redis"},
        "notifier": {"nats"},
        "payments": {"nats", "libsql"},
        "verifier": {"nats"},
        "amadeus-proxy": {"nats", "redis"},
    }
    for name, required in needs.items():
        depends = compose["services"][name]["depends_on"]
        for dep in required:
            assert depends[dep]["condition"] == "service_healthy", (name, dep)


@pytest.mark.parametrize(
    ("service", "damage", "expected"),
    [
        ("gateway", lambda s: s.pop("healthcheck"), "gateway: no healthcheck"),
        ("payments", lambda s: s["deploy"]["resources"]["limits"].pop("memory"), "memory limit"),
        ("redis", lambda s: s["deploy"]["resources"].pop("limits"), "redis: no cpus limit"),
        ("verifier", lambda s: s.__setitem__("ports", ["8083:8083"]), "publishes ports"),
        (
            "gateway",
            lambda s: s["environment"].__setitem__("ADMIN_TOKEN", "let-me-in"),
            "literal secret",
        ),
        (
            "gateway",
            lambda s: s["environment"].__setitem__("REDIS_URL", "redis://:pw@redis:6379/0"),
            "literal secret",
        ),
        ("notifier", lambda s: s.pop("restart"), "restart policy"),
        (
            "gateway",
            lambda s: s["environment"].__setitem__("ADMIN_TOKEN", "${ADMIN_TOKEN:-}"),
            "secret ADMIN_TOKEN in environment (use ADMIN_TOKEN_FILE)",
        ),
        (
            "payments",
            lambda s: s["environment"].__setitem__("SOLANA_PRIVATE_KEY", ""),
            "secret SOLANA_PRIVATE_KEY in environment",
        ),
        (
            "verifier",
            lambda s: s["environment"].__setitem__("NATS_USER", "payments"),
            "verifier: NATS_USER is not its own user",
        ),
        (
            "notifier",
            lambda s: s.pop("secrets"),
            "NATS_PASSWORD_FILE names secret nats-notifier-password, not mounted",
        ),
        ("nats", lambda s: s.__setitem__("image", "nats:2.10.29-alpine"), "nats: image"),
        ("nats", lambda s: s.__setitem__("image", "nats:latest"), "nats: image"),
        ("redis", lambda s: s.__setitem__("image", "redis:7.4.2-alpine"), "not a patched Redis"),
        ("redis", lambda s: s.__setitem__("image", "redis:8.4.0-alpine"), "not a patched Redis"),
        ("redis", lambda s: s.__setitem__("image", "redis:7-alpine"), "not a patched Redis"),
        ("amadeus-proxy", lambda s: s["environment"].pop("HOST"), "HOST"),
        (
            "payments",
            lambda s: s["depends_on"]["libsql"].__setitem__("condition", "service_started"),
            "depends on libsql without condition service_healthy",
        ),
    ],
)
def test_the_compose_check_notices_damage(
    compose: dict[str, Any], service: str, damage: Any, expected: str
) -> None:
    broken = copy.deepcopy(compose)
    damage(broken["services"][service])
    problems = compose_problems(broken)
    assert any(expected in p for p in problems), problems


def test_env_example_lists_every_setting_without_secret_values() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    required = readme_settings(readme)
    assert {"NATS_URL", "TURSO_DB_AUTH_TOKEN", "SHUTDOWN_TIMEOUT"} <= set(required)
    later = [  # settings of features still being built (README, below the table)
        "HELIUS_WEBHOOK_SECRET",
        "MERCHANT_WALLET",
        "SOLANA_PRIVATE_KEY",
        "AMADEUS_CLIENT_ID",
        "AMADEUS_CLIENT_SECRET",
        "PAYMOB_HMAC_SECRET",
        "ADMIN_TOKEN",
        "CATALOG_PATH",
    ]
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert env_example_problems(text, required + later) == []


def test_the_env_example_check_notices_a_secret_value() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    leaked = text.replace("TURSO_DB_AUTH_TOKEN=\n", "TURSO_DB_AUTH_TOKEN=eyJhbGciOi\n")
    assert leaked != text
    assert env_example_problems(leaked, []) == [
        ".env.example gives the secret TURSO_DB_AUTH_TOKEN a value"
    ]
    assert env_example_problems(text, ["NOT_THERE"]) == [".env.example lacks NOT_THERE"]


def test_production_with_a_declared_merchant_wallet(compose: dict[str, Any]) -> None:
    payments = compose["services"]["payments"]["environment"]
    assert "MERCHANT_WALLET" in payments
    assert payments["ENVIRONMENT"] == "${ENVIRONMENT:-production}"
    broken = copy.deepcopy(compose)
    broken["services"]["payments"]["environment"].pop("MERCHANT_WALLET")
    broken["services"]["gateway"]["environment"]["ENVIRONMENT"] = "development"
    problems = compose_problems(broken)
    assert "payments: MERCHANT_WALLET is not declared" in problems
    assert "gateway: ENVIRONMENT does not default to production" in problems


def test_nats_runs_the_generated_permissions() -> None:
    """deploy/nats/auth.conf is what topology.py says today (regenerate it with
    `python -m axiom_shared.nats_permissions > deploy/nats/auth.conf`)."""
    shipped = (DEPLOY / "nats" / "auth.conf").read_text(encoding="utf-8")
    assert shipped == server_config()
    assert 'include "auth.conf"' in (DEPLOY / "nats" / "nats.conf").read_text(encoding="utf-8")


def test_nats_accepts_the_shipped_configuration(tmp_path: Path) -> None:
    """nats-server itself parses deploy/nats/ (with passwords as the secrets would give)."""
    for name in ("nats.conf", "auth.conf"):
        text = (DEPLOY / "nats" / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(text.replace("/data", str(tmp_path / "data")))
    write_server_files(tmp_path / "secrets")
    (tmp_path / "passwords.conf").write_text((tmp_path / "secrets" / "passwords.conf").read_text())
    checked = subprocess.run(
        [find_binary("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_compose_secrets_are_the_files_the_script_creates() -> None:
    (doc,) = load_yaml_documents(COMPOSE_FILE)
    script = (DEPLOY / "scripts" / "compose-secrets.sh").read_text(encoding="utf-8")
    for name, source in doc["secrets"].items():
        path = source["file"].removeprefix("./secrets/")
        base = path.removeprefix("nats/").removesuffix(".password").removesuffix(".conf")
        assert path.startswith("nats/") or base in script, name
