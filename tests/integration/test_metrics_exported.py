"""Every metric named in the Grafana dashboard and the alert rules is exported by a running
ctloop service (read from /metrics of a real stack)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from services.supervisor import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = re.compile(r"_(bucket|sum|count|total|created)$")


def named_metrics() -> dict[str, set[str]]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "ctloop.json").read_text())
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    expressions = {
        "dashboard": [t["expr"] for p in dashboard["panels"] for t in p["targets"]],
        "alerts": [r["expr"] for r in rules],
    }
    return {
        where: {SUFFIXES.sub("", m) for e in exprs for m in re.findall(r"\bctloop_[a-z_]+", e)}
        for where, exprs in expressions.items()
    }


def test_dashboard_and_alert_metrics_are_exported(stack: Stack) -> None:
    exported: set[str] = set()
    for service in stack.services:
        text = httpx.get(f"{stack.url(service)}/metrics", timeout=10).text
        exported |= {SUFFIXES.sub("", m) for m in re.findall(r"^# TYPE (ctloop_[a-z_]+)", text, re.M)}
    for where, metrics in named_metrics().items():
        assert metrics, where
        missing = metrics - exported
        assert not missing, f"{where} names metrics no service exports: {sorted(missing)}"
