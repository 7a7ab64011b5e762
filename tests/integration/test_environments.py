"""Staged deployment: a version goes staging (`auto`) -> preprod (`after` 4 s and 30 labelled
predictions in staging without a rollback or alarm) -> production (`manual`: an operator approves),
never skipping a step, with a
serving instance in staging and one in production each following its environment's alias, a
monitor watching staging's version, and the path it took (who, when, why) in its lineage."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from services.supervisor import Stack
from shared import credentials, topics
from shared.broker import free_port
from shared.kafka import EventPublisher
from shared.settings import CommonSettings
from shared.validation import Label
from tests.fixtures import demo_rows
from tests.integration.conftest import start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration

ENVIRONMENTS = [
    {"name": "staging", "rule": "auto"},
    {"name": "preprod", "rule": "after", "after_s": 4, "after_labelled": 30},
]


def run_in_staging(stack: Stack, service: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A second `service` process, of the staging environment, logging into `folder`."""
    upper = service.upper()
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", service],
        env={
            **credentials.for_service(stack.env, service),
            f"CTLOOP_{upper}_ENVIRONMENT": "staging",
            f"CTLOOP_{upper}_PORT": str(port),
            "CTLOOP_SERVING_GRPC_PORT": str(free_port()),
            "CTLOOP_INSTANCE": f"{service}-staging",
            "CTLOOP_DATA_DIR": str(folder),
            "CTLOOP_MONITOR_QUALITY_REPORT_S": "1",
        },
        stdout=(folder / f"{service}-staging.log").open("w"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str, str]]:
    """The registry and a production serving instance, plus serving and a monitor in staging."""
    stack = start_stack(
        tmp_path_factory.mktemp("staged"),
        ("registry", "serving"),
        CTLOOP_REGISTRY_ENVIRONMENTS=json.dumps(ENVIRONMENTS),
        CTLOOP_REGISTRY_PROMOTION_POLICY="manual",
        CTLOOP_REGISTRY_ENVIRONMENT_CHECK_S="0.5",
    )
    folder: Path = tmp_path_factory.mktemp("staging")
    ports = {service: free_port() for service in ("serving", "monitor")}
    processes = [run_in_staging(stack, service, folder, port) for service, port in ports.items()]
    try:
        yield stack, *(f"http://127.0.0.1:{port}" for port in ports.values())  # type: ignore[misc]
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        for service in ports:
            print(
                f"\n--- {service} (staging) ---\n" + (folder / f"{service}-staging.log").read_text()[-3000:]
            )
        stop_stack(stack)


def served(url: str) -> int | None:
    try:
        version = httpx.get(f"{url}/healthz", timeout=5).json().get("model_version")
    except httpx.HTTPError:
        return None
    return int(version) if version is not None else None


def watched(stack: Stack, monitor: str) -> int | None:
    try:
        status = httpx.get(f"{monitor}/v1/drift/status", timeout=5, headers=stack.auth()).json()
    except httpx.HTTPError:
        return None
    return status.get("reference_version")  # type: ignore[no-any-return]


def label_predictions(stack: Stack, serving: str, version: int, count: int) -> None:
    """`count` predictions by `serving` (which must answer with `version`), then their labels."""
    rows = demo_rows(count, seed=version)
    ids = [f"staged-v{version}-{i}" for i in range(count)]
    answer = httpx.post(
        f"{serving}/v1/predict",
        json={"records": [{"id": i, "features": r} for i, r in zip(ids, rows, strict=True)]},
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == version, answer.text
    publisher = EventPublisher(CommonSettings(kafka_bootstrap=stack.bootstrap), "test")
    for record_id in ids:
        label = Label(id=record_id, label=1, event_time=datetime.now(UTC))
        publisher.publish(topics.LABELS, label, key=record_id)
    publisher.flush(30)
    publisher.close()


def test_a_version_goes_staging_then_preprod_then_production(staged: tuple[Stack, str, str]) -> None:
    stack, staging_serving, staging_monitor = staged
    registry, operator = stack.url("registry"), stack.auth("operator")

    def aliases(version: int) -> list[str]:
        found = httpx.get(f"{registry}/v1/models/demo/versions/{version}", headers=stack.auth()).json()
        return list(found["aliases"])

    def approve(version: int, reason: str) -> httpx.Response:
        return httpx.post(
            f"{registry}/v1/models/demo/versions/{version}/approve",
            json={"environment": "production", "reason": reason},
            headers=operator,
        )

    environments = httpx.get(f"{registry}/v1/environments", headers=stack.auth()).json()
    assert [(e["name"], e["alias"], e["rule"]) for e in environments] == [
        ("staging", "staging", "auto"),
        ("preprod", "preprod", "after"),
        ("production", "champion", "manual"),
    ]

    v1 = upload_demo(stack, seed=1)["version"]
    assert aliases(v1) == ["staging"]  # auto into the first environment, no further
    early = approve(v1, "too early")
    assert early.status_code == 409 and "has not been in preprod" in early.json()["detail"]
    wait_for(lambda: served(staging_serving) == v1, "the staging instance to serve v1", 120)
    wait_for(lambda: watched(stack, staging_monitor) == v1, "the staging monitor to watch v1", 180)
    assert "preprod" not in aliases(v1)  # no labelled predictions yet
    label_predictions(stack, staging_serving, v1, 40)
    wait_for(lambda: "preprod" in aliases(v1), "the after rule to move v1 into preprod", 120)
    assert served(stack.url("serving")) is None  # production has nothing yet: manual

    approved = approve(v1, "release 1: checked in preprod")
    assert approved.status_code == 200, approved.text
    wait_for(lambda: served(stack.url("serving")) == v1, "production to serve v1", 120)

    v2 = upload_demo(stack, seed=2)["version"]
    wait_for(lambda: served(staging_serving) == v2, "the staging instance to serve v2", 120)
    wait_for(lambda: watched(stack, staging_monitor) == v2, "the staging monitor to watch v2", 180)
    skipped = httpx.post(
        f"{registry}/v1/models/demo/versions/{v2}/promote",
        json={"environment": "production"},
        headers=operator,
    )
    assert skipped.status_code == 409 and "only from preprod" in skipped.json()["detail"]
    rolled = httpx.post(
        f"{registry}/v1/models/demo/rollback",
        json={"environment": "staging", "replaces": v2, "reason": "v2 misbehaves in staging"},
        headers=operator,
    )
    assert rolled.status_code == 200 and rolled.json()["version"] == v1
    wait_for(lambda: served(staging_serving) == v1, "the staging instance back on v1", 120)
    wait_for(lambda: watched(stack, staging_monitor) == v1, "the staging monitor back on v1", 120)

    v3 = upload_demo(stack, seed=3)["version"]
    wait_for(lambda: watched(stack, staging_monitor) == v3, "the staging monitor to watch v3", 120)
    wait_for(lambda: served(staging_serving) == v3, "the staging instance to serve v3", 120)
    label_predictions(stack, staging_serving, v3, 40)
    wait_for(lambda: "preprod" in aliases(v3), "the after rule to move v3 into preprod", 120)
    assert "preprod" not in aliases(v2)  # rolled back in staging: never went further
    assert approve(v3, "release 3").status_code == 200
    wait_for(lambda: served(stack.url("serving")) == v3, "production to serve v3", 120)
    wait_for(lambda: served(staging_serving) == v3, "the staging instance to serve v3", 120)

    lineage = httpx.get(f"{registry}/v1/models/demo/versions/{v3}/lineage", headers=stack.auth()).json()
    path = [(p["environment"], p["actor"], p["reason"]) for p in lineage["promotions"]]
    assert path == [
        ("staging", "trainer", "policy: staging on upload"),
        (
            "preprod",
            "registry",
            "after: 4 s and 30 labelled predictions in staging without a rollback or alarm",
        ),
        ("production", "operator", "release 3"),
    ]
    production = httpx.get(
        f"{registry}/v1/models/demo/history", params={"environment": "production"}, headers=stack.auth()
    ).json()
    assert [(h["version"], h["reason"]) for h in production] == [
        (v1, "release 1: checked in preprod"),
        (v3, "release 3"),
    ]
