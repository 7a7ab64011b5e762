"""Prometheus, real: promtool checks the configuration and the alert rules and runs their unit
tests (deploy/prometheus/alerts_test.yml); then a Prometheus scrapes every running service
and every target must be up, every expression of the alert rules and the Grafana dashboard
must evaluate without error, and every metric they name must be one a service exports.

Prometheus and promtool come from Debian's `prometheus` package, which `make install` installs
(like wrk); without them these tests fail saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.supervisor import SERVICES, Stack
from shared.broker import free_port
from tests.integration.conftest import start_stack, stop_stack, upload_demo, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make install` installs Debian's prometheus package")
    return found


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    done = subprocess.run([tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def config_beside_its_rules(folder: Path, targets: dict[str, str] | None = None) -> Path:
    """The shipped prometheus.yml, with its rule file where it is here (the compose file mounts
    it at /etc/prometheus) and, if given, the services' addresses on this machine (in place of
    the DNS names compose answers, with the same `service` label)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", folder / "alerts.yml")
    config["rule_files"] = ["alerts.yml"]
    if targets is not None:
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
        job = config["scrape_configs"][0]
        names = [found["names"][0] for found in job.pop("dns_sd_configs")]
        job.pop("relabel_configs")
        job["static_configs"] = [{"targets": [targets[name]], "labels": {"service": name}} for name in names]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_promtool_checks_the_config_and_the_rules(tmp_path: Path) -> None:
    assert "SUCCESS" in promtool("check", "config", str(config_beside_its_rules(tmp_path)))
    assert "SUCCESS: 14 rules found" in promtool("check", "rules", "alerts.yml")


def test_every_alert_fires_on_its_series_and_stays_quiet_otherwise() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts_test.yml").read_text()))
    assert tested == set(re.findall(r"alert: (\w+)", (PROMETHEUS_DIR / "alerts.yml").read_text()))


def expressions() -> dict[str, str]:
    """Every PromQL expression the alert rules and the dashboards use, by where it is."""
    found = {}
    for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found[f"{path.name}: {panel['title']} ({target.get('refId', '')})"] = target["expr"]
    return found


def metric_names(expression: str) -> set[str]:
    names = set(re.findall(r"\b(ctloop_[a-z_]+)", expression))
    # a histogram's series are its name with a suffix; the metadata knows the family
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    folder = tmp_path_factory.mktemp("prometheus")
    stack = start_stack(folder, SERVICES)
    port = free_port()
    config = config_beside_its_rules(folder, {s: f"127.0.0.1:{stack.ports[s]}" for s in SERVICES})
    prometheus = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=(folder / "prometheus.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield stack, f"http://127.0.0.1:{port}"
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        stop_stack(stack)


def query(url: str, expression: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=10).json()
    return answer


@pytest.mark.integration
def test_a_real_prometheus_scrapes_every_service_and_every_expression_evaluates(
    scraped: tuple[Stack, str],
) -> None:
    stack, url = scraped

    def targets_up() -> bool:
        try:
            active = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        except httpx.HTTPError:
            return False
        return len(active) == len(SERVICES) and all(t["health"] == "up" for t in active)

    wait_for(targets_up, "Prometheus to scrape every service", timeout_s=120)
    # traffic, so that the request and model series exist: a model, predictions, a bad record
    upload_demo(stack)
    wait_for(lambda: httpx.get(f"{stack.url('serving')}/healthz").status_code == 200, "serving to load v1")
    for _ in range(5):
        httpx.post(f"{stack.url('serving')}/v1/predict", json={"features": {"x1": 0.1}})  # a 422
    time.sleep(3)  # NOTE: three scrapes at 1 s: the series then exist in Prometheus

    metadata = httpx.get(f"{url}/api/v1/metadata", timeout=10).json()["data"]
    problems = []
    for where, expression in expressions().items():
        answer = query(url, expression)
        if answer["status"] != "success":
            problems.append(f"{where}: {answer.get('error')}")
        unknown = metric_names(expression) - set(metadata)
        if unknown:
            problems.append(f"{where}: no service exports {sorted(unknown)}")
    assert not problems, "\n".join(problems)
    # what the dashboard's serving panels draw is there
    assert query(url, "ctloop_serving_model_version")["data"]["result"][0]["value"][1] == "1"
    alias = query(url, 'ctloop_registry_alias_version{alias="champion"}')["data"]["result"]
    assert alias and alias[0]["value"][1] == "1"
