"""The compose file is the contract: the real Compose v2 resolves it, each ctloop service's
settings validate from the environment it gives (with the secrets a user must export), the
ports it publishes are the ones the services listen on, replicated services sit behind the
nginx gateway (whose configuration the real nginx accepts), and the healthcheck and
`depends_on` chains start everything in an order that works. The same for the Kubernetes manifests: each
Deployment's settings validate from the ConfigMap and the secrets the example names."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.supervisor import SERVICES
from shared import credentials
from shared.settings import (
    ConsoleSettings,
    IngestSettings,
    MonitorSettings,
    RegistrySettings,
    ServingSettings,
    TrainerSettings,
)
from tests.deploy.compose import CREDENTIALS, ROOT, SECRETS, compose_config, run_compose

SETTINGS: dict[str, type[BaseSettings]] = {
    "serving": ServingSettings,
    "ingest": IngestSettings,
    "registry": RegistrySettings,
    "trainer": TrainerSettings,
    "monitor": MonitorSettings,
    "console": ConsoleSettings,
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def test_compose_v2_resolves_the_file() -> None:
    done = run_compose("config", "--quiet")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_a_missing_secret_stops_compose_naming_it(secret: str) -> None:
    done = run_compose("config", "--quiet", secrets={k: v for k, v in SECRETS.items() if k != secret})
    assert done.returncode != 0 and f"set {secret}" in done.stderr, done.stderr


def _ports(settings: BaseSettings, service: str) -> list[int]:
    """The ports a service listens on (`<service>_port`, and serving's `serving_grpc_port`)."""
    names = [n for n in type(settings).model_fields if n.startswith(f"{service}_") and n.endswith("_port")]
    return [getattr(settings, n) for n in names]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_settings_validate_from_its_compose_environment(
    service: str, config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = config["services"][service]
    for name in [k for k in os.environ if k.startswith("CTLOOP_")]:
        monkeypatch.delenv(name)
    for name, value in spec["environment"].items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[service]()  # raises on a renamed setting's bad value
    assert settings.dev_mode is False  # type: ignore[attr-defined]
    settings.require_for(service)  # type: ignore[attr-defined]  # what it refuses to start without
    held = {name for name in spec["environment"] if name in credentials.VARIABLES}
    assert held <= credentials.NEEDS[service], f"{service} holds credentials it does not need"
    assert _offered(spec) == _ports(settings, service), f"{service} offers a port it does not listen on"
    assert settings.host == "0.0.0.0"  # type: ignore[attr-defined]  # reachable from other containers
    registry_port = _offered(config["services"]["registry"])[0]
    assert settings.registry_url == f"http://registry:{registry_port}"  # type: ignore[attr-defined]
    assert settings.kafka_bootstrap == "kafka:9092"  # type: ignore[attr-defined]
    assert spec["command"] == ["ctloop", "run", service]
    healthcheck = spec["healthcheck"]["test"]
    assert healthcheck[:4] == ["CMD", "ctloop", "probe", service]
    assert ("--ready" in healthcheck) == (service != "serving")  # serving is not ready before a model


def _offered(spec: dict[str, Any]) -> list[int]:
    """The ports a compose service publishes, or exposes to the gateway when replicated."""
    return [p["target"] for p in spec.get("ports", [])] or [int(p) for p in spec.get("expose", [])]


REPLICAS = {"ingest": 2, "serving": 2, "registry": 2, "trainer": 2, "monitor": 3}
"""What tests/integration/test_scale_out.py runs (and the Kubernetes manifests ship)."""


def test_replicated_services_sit_behind_the_gateway(config: dict[str, Any]) -> None:
    services = config["services"]
    gateway = services["gateway"]
    published = {p["published"]: p["target"] for p in gateway["ports"]}
    assert {int(k): v for k, v in published.items()} == {p: p for p in published.values()}
    for name, replicas in REPLICAS.items():
        spec = services[name]
        assert spec["deploy"]["replicas"] == replicas, name
        assert "ports" not in spec, f"{name} has {replicas} replicas: a fixed host port would clash"
        if name != "monitor":  # each worker's drift status is its own: read through the console
            assert set(_offered(spec)) <= set(published.values()), f"the gateway does not publish {name}"
    assert services["monitor"]["deploy"]["replicas"] <= int(
        config["x-ctloop"]["environment"]["CTLOOP_TOPIC_PARTITIONS"]
    )
    assert services["registry"]["environment"]["CTLOOP_REGISTRY_ARTIFACT_URL"] == "database"
    mount = next(v for v in gateway["volumes"] if v["target"] == "/etc/nginx/nginx.conf")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run([nginx, "-t", "-c", mount["source"]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_dependencies_start_everything_in_an_order_that_works(config: dict[str, Any]) -> None:
    services = config["services"]

    def waits_for_healthy(name: str, other: str) -> bool:
        dependency = services[name].get("depends_on", {}).get(other)
        return bool(dependency) and dependency["condition"] == "service_healthy"

    for name in SERVICES:
        assert waits_for_healthy(name, "kafka"), f"{name} must wait for a healthy broker"
        assert "healthcheck" in services[name]
    assert waits_for_healthy("registry", "postgres")
    for name in ("serving", "trainer", "monitor"):  # they ask the registry at start-up
        assert waits_for_healthy(name, "registry"), name
    for name, spec in services.items():  # every service waited on has a healthcheck to pass
        for other, dependency in spec.get("depends_on", {}).items():
            if dependency["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits on {other}, which has no healthcheck"
    assert services["registry"]["environment"]["CTLOOP_REGISTRY_DB_URL"].startswith("postgresql+psycopg://")


K8S_SECRETS = {**CREDENTIALS, "POSTGRES_PASSWORD": SECRETS["POSTGRES_PASSWORD"]}


def _k8s_environment(
    container: dict[str, Any], config: dict[str, str], secrets: dict[str, str]
) -> dict[str, str]:
    """A container's environment as the kubelet builds it: `envFrom` ConfigMaps, then `env`
    (literal values and secret keys)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "ctloop-config"
        env.update(config)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            reference = item["valueFrom"]["secretKeyRef"]
            if reference["key"] in secrets or not reference.get("optional"):
                env[item["name"]] = secrets[reference["key"]]
    return env


@pytest.mark.parametrize("service", SERVICES)
def test_each_k8s_deployment_settings_validate_from_its_configmap_and_secret(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k8s = ROOT / "deploy" / "k8s"
    documents = [d for p in sorted(k8s.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    config = next(
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ctloop-config"
    )
    example = (k8s / "secrets.env.example").read_text()
    keys = [line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")]
    secrets = {
        key: K8S_SECRETS.get(key, "postgresql+psycopg://ctloop:pw@postgres:5432/ctloop")
        for key in keys
        if key in K8S_SECRETS or key == "CTLOOP_REGISTRY_DB_URL"  # the reader token stays unset
    }
    deployment = next(
        d
        for d in documents
        if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == service
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for name in [k for k in os.environ if k.startswith("CTLOOP_")]:
        monkeypatch.delenv(name)
    for name, value in _k8s_environment(container, config["data"], secrets).items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[service]()
    assert settings.dev_mode is False  # type: ignore[attr-defined]
    settings.require_for(service)  # type: ignore[attr-defined]
    held = {item["name"] for item in container.get("env", []) if item["name"] in credentials.VARIABLES}
    assert held <= credentials.NEEDS[service], f"{service} holds credentials it does not need"
    assert [p["containerPort"] for p in container["ports"]] == _ports(settings, service)
    assert container["command"] == ["ctloop", "run", service]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "schema")
    assert str(settings.schema_path).startswith(mount["mountPath"])  # type: ignore[attr-defined]
