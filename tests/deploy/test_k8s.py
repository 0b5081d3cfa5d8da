"""deploy/k8s, offline: every manifest valid against the Kubernetes OpenAPI schemas (the JSON
schemas that kubernetes-validate ships, strict: unknown fields are errors), and our rules:
probes, resources, hardening, secrets as mounted files only, HPAs, NetworkPolicies, NATS cluster
with the generated per-service permissions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from axiom_shared.nats_permissions import server_config
from tests.deploy.checks import K8S_DIR, SERVICES, k8s_problems, load_yaml_documents

#: The oldest Kubernetes minor we support; kubernetes-validate also knows newer ones.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load_yaml_documents(path)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    docs: list[dict[str, Any]], version: str
) -> None:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {exc.message}")
    assert errors == []


def test_the_schema_check_is_not_vacuous(docs: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(find(docs, "Deployment", "gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


def test_manifests_follow_our_rules(docs: list[dict[str, Any]]) -> None:
    assert k8s_problems(docs) == []


def test_kustomization_lists_every_manifest_in_the_axiomid_namespace(
    docs: list[dict[str, Any]],
) -> None:
    (kustomization,) = load_yaml_documents(K8S_DIR / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["namespace"] == "axiomid"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    assert (
        find(docs, "Namespace", "axiomid")["metadata"]["labels"][
            "pod-security.kubernetes.io/enforce"
        ]
        == "restricted"
    )
    for doc in docs:  # the Kustomization sets it; a manifest must not pin another one
        assert doc["metadata"].get("namespace", "axiomid") == "axiomid"


def test_services_select_their_pods_and_target_a_named_port(docs: list[dict[str, Any]]) -> None:
    for name, port in SERVICES.items():
        service = find(docs, "Service", name)
        deployment = find(docs, "Deployment", name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_nats_is_a_three_node_jetstream_cluster(docs: list[dict[str, Any]]) -> None:
    statefulset = find(docs, "StatefulSet", "nats")
    assert statefulset["spec"]["serviceName"] == "nats-headless"
    assert find(docs, "Service", "nats-headless")["spec"]["clusterIP"] == "None"
    conf = find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "jetstream" in conf
    for ordinal in range(3):
        assert f"nats://nats-{ordinal}.nats-headless.axiomid.svc.cluster.local:6222" in conf
    assert find(docs, "ConfigMap", "axiom-config")["data"]["NATS_STREAM_REPLICAS"] == "3"


def test_nats_runs_the_generated_permissions_with_passwords_from_a_secret(
    docs: list[dict[str, Any]],
) -> None:
    config = find(docs, "ConfigMap", "nats-config")["data"]
    assert config["auth.conf"] == server_config()
    assert 'include "auth.conf"' in config["nats.conf"]
    volumes = find(docs, "StatefulSet", "nats")["spec"]["template"]["spec"]["volumes"]
    (projected,) = [v["projected"] for v in volumes if v["name"] == "config"]
    sources = {next(iter(source)): source for source in projected["sources"]}
    assert sources["configMap"]["configMap"]["name"] == "nats-config"
    assert sources["secret"]["secret"]["items"] == [
        {"key": "passwords.conf", "path": "passwords.conf"}
    ]


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("kind", "name", "damage", "expected"),
    [
        (
            "Deployment",
            "payments",
            lambda d: _container(d).pop("readinessProbe"),
            "no readinessProbe",
        ),
        ("Deployment", "gateway", lambda d: _container(d).pop("livenessProbe"), "no livenessProbe"),
        (
            "Deployment",
            "verifier",
            lambda d: _container(d)["resources"]["limits"].pop("memory"),
            "no memory in resources.limits",
        ),
        (
            "StatefulSet",
            "nats",
            lambda d: _container(d)["resources"].pop("limits"),
            "no cpu in resources.limits",
        ),
        (
            "Deployment",
            "notifier",
            lambda d: _container(d)["securityContext"].pop("readOnlyRootFilesystem"),
            "readOnlyRootFilesystem",
        ),
        (
            "Deployment",
            "gateway",
            lambda d: _container(d)["env"].append({"name": "ADMIN_TOKEN", "value": "let-me-in"}),
            "literal secret",
        ),
        (
            "Deployment",
            "payments",
            lambda d: _container(d)["env"].append(
                {
                    "name": "TURSO_DB_AUTH_TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {"name": "axiom-secrets", "key": "turso-db-auth-token"}
                    },
                }
            ),
            "secret TURSO_DB_AUTH_TOKEN in env from a secretKeyRef",
        ),
        (
            "Deployment",
            "gateway",
            lambda d: _container(d)["env"].append({"name": "HELIUS_WEBHOOK_SECRET", "value": ""}),
            "secret HELIUS_WEBHOOK_SECRET in env (use HELIUS_WEBHOOK_SECRET_FILE)",
        ),
        (
            "Deployment",
            "verifier",
            lambda d: _container(d).__setitem__("envFrom", [{"secretRef": {"name": "x"}}]),
            "a whole Secret in env",
        ),
        (
            "Deployment",
            "notifier",
            lambda d: _container(d)["volumeMounts"].pop(),
            "NATS_PASSWORD_FILE is not in a mounted secret volume",
        ),
        (
            "Deployment",
            "amadeus-proxy",
            lambda d: _container(d)["env"][1].__setitem__("value", "gateway"),
            "NATS_USER is not its own user",
        ),
        (
            "StatefulSet",
            "nats",
            lambda d: _container(d).__setitem__("image", "nats:2.10.29-alpine"),
            "is not nats:2.15.<patch>-alpine",
        ),
        (
            "Deployment",
            "amadeus-proxy",
            lambda d: d["spec"]["template"]["spec"].pop("enableServiceLinks"),
            "enableServiceLinks",
        ),
        (
            "Deployment",
            "payments",
            lambda d: d["spec"]["template"]["spec"].__setitem__(
                "terminationGracePeriodSeconds", 10
            ),
            "terminationGracePeriodSeconds",
        ),
        (
            "HorizontalPodAutoscaler",
            "verifier",
            lambda d: d.__setitem__("kind", "Removed"),
            "HorizontalPodAutoscaler for verifier",
        ),
        (
            "NetworkPolicy",
            "payments-ingress",
            lambda d: d["spec"]["ingress"][0]["from"].append(
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                }
            ),
            "admits traffic from outside",
        ),
        (
            "NetworkPolicy",
            "default-deny-all",
            lambda d: d["spec"].__setitem__("policyTypes", ["Ingress"]),
            "no default-deny",
        ),
        (
            "Ingress",
            "gateway-sse",
            lambda d: d["metadata"]["annotations"].pop(
                "nginx.ingress.kubernetes.io/proxy-buffering"
            ),
            "SSE route is buffered",
        ),
    ],
)
def test_the_k8s_check_notices_damage(
    docs: list[dict[str, Any]], kind: str, name: str, damage: Any, expected: str
) -> None:
    broken = copy.deepcopy(docs)
    damage(find(broken, kind, name))
    problems = k8s_problems(broken)
    assert any(expected in p for p in problems), problems


def test_production_with_a_declared_merchant_wallet(docs: list[dict[str, Any]]) -> None:
    config = find(docs, "ConfigMap", "axiom-config")["data"]
    assert config["ENVIRONMENT"] == "production"
    assert "MERCHANT_WALLET" in config
    for damage in ("ENVIRONMENT", "MERCHANT_WALLET"):
        broken = copy.deepcopy(docs)
        find(broken, "ConfigMap", "axiom-config")["data"].pop(damage)
        assert any(damage in p for p in k8s_problems(broken))
