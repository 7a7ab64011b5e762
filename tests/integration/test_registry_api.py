"""The registry process on the embedded broker: loaders refuse tampered and unsigned
artifacts, events survive a paused broker (outbox), approve/rollback/archive/lineage over HTTP,
and the `ctloop models` CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.registry_client import RegistryClient
from shared.serialization import ArtifactError
from tests.integration.conftest import read_all, start_stack, stop_stack, upload_demo

pytestmark = pytest.mark.integration

TOKEN = "registry-test-token-0123456789"
KEY = "registry-test-signing-key-0123"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("registry")
    running = start_stack(
        folder,
        services=("registry",),
        CTLOOP_REGISTRY_TOKEN=TOKEN,
        CTLOOP_SIGNING_KEY=KEY,
        CTLOOP_DEV_MODE="false",
    )
    running.folder = folder  # type: ignore[attr-defined]
    yield running
    stop_stack(running)


def upload(stack: Stack, name: str = "demo", seed: int = 1, correlation: str | None = None) -> dict:
    return upload_demo(
        stack.url("registry"), TOKEN, name=name, seed=seed, correlation=correlation, trigger="drift"
    )


def client(stack: Stack, key: str = KEY) -> RegistryClient:
    return RegistryClient(stack.url("registry"), TOKEN, signing_key=key)


def test_loaders_verify_digest_and_signature(registry: Stack) -> None:
    created = upload(registry, seed=1)
    version = client(registry).version("demo", created["version"])
    assert version is not None and version.signature.startswith("hmac-sha256:")
    assert client(registry).artifact("demo", version)  # verified
    with pytest.raises(ArtifactError, match="unsigned or its signature is wrong"):
        client(registry, key="another-key-entirely-000").artifact("demo", version)

    database = registry.folder / "registry" / "registry.db"  # type: ignore[attr-defined]
    with sqlite3.connect(database) as conn:  # someone edits the row: the signature no longer fits
        conn.execute(
            "UPDATE versions SET signature = 'hmac-sha256:00' WHERE version = ?", (created["version"],)
        )
    with pytest.raises(ArtifactError, match="unsigned or its signature is wrong"):
        client(registry).artifact("demo", client(registry).version("demo", created["version"]))  # type: ignore[arg-type]

    second = upload(registry, seed=2)
    path = registry.folder / "registry" / "artifacts" / second["digest"][7:9] / second["digest"][7:]  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-5] + b"xxxxx")  # tampered on disk
    with pytest.raises(ArtifactError, match="does not match its digest"):
        client(registry).artifact("demo", client(registry).version("demo", second["version"]))  # type: ignore[arg-type]


def test_events_survive_a_paused_broker(registry: Stack) -> None:
    assert registry.broker is not None
    registry.broker.pause()
    try:
        created = upload(registry, name="paused", seed=3, correlation="loop-paused")  # the database takes it
    finally:
        registry.broker.resume()
    events = read_all(
        registry.bootstrap, topics.MODELS, lambda ev: any(e.payload.get("model_name") == "paused" for e in ev)
    )
    mine = [e for e in events if e.payload.get("model_name") == "paused"]
    assert [(e.type, e.payload["version"]) for e in mine] == [
        ("model.registered", created["version"]),
        ("model.promoted", created["version"]),
    ]
    assert {e.correlation_id for e in mine} == {"loop-paused"}


def test_approve_rollback_archive_lineage(registry: Stack) -> None:
    url, auth = registry.url("registry"), {"Authorization": f"Bearer {TOKEN}"}
    first, second = upload(registry, name="flow", seed=4), upload(registry, name="flow", seed=5)
    assert httpx.get(f"{url}/v1/models/flow/aliases/champion").json()["version"] == second["version"]
    rolled = httpx.post(f"{url}/v1/models/flow/rollback", json={"reason": "worse live"}, headers=auth)
    assert rolled.status_code == 200 and rolled.json()["version"] == first["version"]
    assert httpx.post(f"{url}/v1/models/flow/rollback", headers={}).status_code == 401
    # the same rollback asked again (by a second monitor, say) is refused, not a flip back
    again = httpx.post(
        f"{url}/v1/models/flow/rollback",
        json={"reason": "worse live", "replaces": second["version"]},
        headers=auth,
    )
    assert again.status_code == 409 and "moved" in again.json()["detail"]
    approve = f"{url}/v1/models/flow/versions/{second['version']}/approve"
    refused_again = httpx.post(approve, headers=auth)
    assert refused_again.status_code == 409 and "rolled back" in refused_again.json()["detail"]
    approved = httpx.post(
        approve, json={"override_rollback": True, "replaces": first["version"]}, headers=auth
    )
    assert approved.json()["aliases"] == ["champion"]
    archived = httpx.post(f"{url}/v1/models/flow/versions/{first['version']}/archive", headers=auth)
    assert archived.json()["status"] == "archived"
    refused = httpx.post(f"{url}/v1/models/flow/versions/{first['version']}/promote", headers=auth)
    assert refused.status_code == 409 and "archived" in refused.json()["detail"]
    lineage = httpx.get(f"{url}/v1/models/flow/versions/{second['version']}/lineage").json()
    assert lineage["run_id"] == "run-5" and [p["reason"] for p in lineage["promotions"]] == [
        "policy: champion on upload",
        "worse live",
        "approved",
    ]
    events = httpx.get(f"{url}/v1/models/flow/events").json()
    assert [e["type"] for e in events].count("model.promoted") == 4


def test_models_cli(registry: Stack) -> None:
    upload(registry, name="cli", seed=6)
    upload(registry, name="cli", seed=7)
    env = {**os.environ, "CTLOOP_REGISTRY_URL": registry.url("registry"), "CTLOOP_REGISTRY_TOKEN": TOKEN}

    def ctloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "models", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = ctloop("list")
    assert listed.returncode == 0 and any(m["name"] == "cli" for m in json.loads(listed.stdout))
    assert ctloop("rollback", "cli").returncode == 0
    history = json.loads(ctloop("history", "cli").stdout)
    assert [h["version"] for h in history] == [1, 2, 1]
    assert json.loads(ctloop("lineage", "cli", "2").stdout)["run_id"] == "run-7"
    missing = ctloop("show", "nope")
    assert missing.returncode == 1 and "no model named 'nope'" in missing.stderr
