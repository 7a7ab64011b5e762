"""The deployment files, checked here without a Docker engine or a cluster: the compose file
against the compose-spec schema and ctloop's own rules, the Kubernetes manifests against the
Kubernetes schemas, every configuration key against the settings, every alert's runbook entry,
and the configuration reference against the settings it is generated from."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jsonschema.validators import validator_for

from services.cli import SERVICES
from services.config_reference import env_names, render
from shared.schema import load_schema
from shared.settings import DEFAULT_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
K8S = ROOT / "deploy" / "k8s"


def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_compose_matches_the_compose_spec() -> None:
    # The compose-spec schema as vendored by check-jsonschema (its CLI needs a newer click than
    # faust allows, so the schema is used directly).
    spec = importlib.util.find_spec("check_jsonschema")  # locates the package without running it
    assert spec is not None and spec.submodule_search_locations
    vendored = Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    validator = validator_for(schema)(schema)  # the schema is draft 2020-12
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]]
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["ingest"]["comand"] = ["ctloop"]
    assert list(validator.iter_errors(broken)), "the validator must reject an unknown service key"


def test_compose_runs_each_service_with_a_real_command() -> None:
    services = COMPOSE["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == ["ctloop", "run", name]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert service["healthcheck"]["test"][:3] == ["CMD", "ctloop", "probe"]
        assert service["healthcheck"]["test"][3] == name
        assert all(
            dep["condition"] in ("service_healthy", "service_started")
            for dep in service["depends_on"].values()
        )
        unknown = {k for k in service["environment"] if k.startswith("CTLOOP_")} - env_names()
        assert not unknown, f"{name} sets variables no service reads: {unknown}"
    assert services["registry"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper


def test_compose_requires_its_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in (
        "CTLOOP_TRAINER_TOKEN",
        "CTLOOP_OPERATOR_TOKEN",
        "CTLOOP_SIGNING_PRIVATE_KEY",
        "CTLOOP_SIGNING_PUBLIC_KEY",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), secret


def test_dockerfile_is_slim_pinned_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and "USER ctloop" in text and "HEALTHCHECK" in text
    text = (ROOT / "deploy" / "docker" / "requirements.lock").read_text()
    lock = [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]
    assert lock and all("==" in line for line in lock)
    for package in (
        "kafka-python",
        "faust-streaming",
        "fastapi",
        "scikit-learn",
        "skops",
        "psycopg",
        "alembic",
        "uvloop",
    ):
        assert any(line.lower().startswith(package + "==") for line in lock), package


@pytest.mark.parametrize(
    ("name", "document"), k8s_documents(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_k8s_manifest_is_valid(name: str, document: dict) -> None:
    kubernetes_validate.validate(document, "1.37.0", strict=True)


def test_k8s_kustomization_and_configuration_keys() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource
    secrets = (K8S / "secrets.env.example").read_text()
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    config = docs[("ConfigMap", "ctloop-config")]["data"]
    assert set(config) <= env_names(), set(config) - env_names()
    for (kind, name), doc in docs.items():
        if kind not in ("Deployment", "StatefulSet") or name == "postgres":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["ctloop", "run", name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert doc["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        for env in container.get("env", []):
            assert env["name"] in env_names(), env["name"]
            if "valueFrom" in env:
                key = env["valueFrom"]["secretKeyRef"]["key"]
                assert re.search(rf"^{key}=", secrets, re.M), key
    # the replica counts tests/integration/test_scale_out.py runs
    assert docs[("StatefulSet", "trainer")]["spec"]["replicas"] == 2  # one active, one standby
    assert docs[("Deployment", "monitor")]["spec"]["replicas"] <= int(config["CTLOOP_TOPIC_PARTITIONS"])
    registry = docs[("Deployment", "registry")]
    assert registry["spec"]["replicas"] == 2
    registry_env = {e["name"]: e for e in registry["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert registry_env["CTLOOP_REGISTRY_ARTIFACT_URL"]["value"] == "database"  # shared by the replicas
    assert "CTLOOP_REGISTRY_DB_URL" in registry_env
    assert {n for k, n in docs if k == "HorizontalPodAutoscaler"} == {"serving", "ingest"}
    schema = yaml.safe_load(docs[("ConfigMap", "ctloop-schema")]["data"]["schema.yaml"])
    assert schema == yaml.safe_load(Path(DEFAULT_SCHEMA).read_text())
    load_schema(DEFAULT_SCHEMA)


def test_every_alert_has_a_runbook_entry() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for rule in rules:
        assert rule["alert"].lower() in headings, rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{rule['alert'].lower()}"
    for topic in ("drift", "accuracy", "lag", "training", "swap"):
        assert any(topic in rule["alert"].lower() for rule in rules), topic


def test_configuration_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: run `ctloop config-reference > docs/configuration.md`"
    )
