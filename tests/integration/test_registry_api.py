"""The registry process on the embedded broker, with generated credentials: loaders refuse
tampered artifacts and every signature that is not the registry's over exactly that version
(another key, an edited schema, swapped digests, the retired HMAC); each role may do only its
part; events survive a paused broker (outbox); approve/rollback/archive/lineage over HTTP; and
the `ctloop models` CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from services.supervisor import Stack
from shared import topics
from shared.registry_api import GateReport, Lineage, VersionMetadata
from shared.registry_client import RegistryClient
from shared.serialization import ArtifactError, digest
from shared.signing import Verifier, generate_keypair
from tests.fixtures import demo_artifact, demo_schema
from tests.integration.conftest import read_all, start_stack, stop_stack, upload_demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("registry")
    running = start_stack(folder, services=("registry",))  # generated credentials, dev mode off
    running.folder = folder  # type: ignore[attr-defined]
    yield running
    stop_stack(running)


def upload(stack: Stack, name: str = "demo", seed: int = 1, correlation: str | None = None) -> dict:
    return upload_demo(stack, name=name, seed=seed, correlation=correlation, trigger="drift")


def client(stack: Stack, public_key: str | None = None) -> RegistryClient:
    key = public_key or stack.env["CTLOOP_SIGNING_PUBLIC_KEY"]
    return RegistryClient(stack.url("registry"), stack.token("reader"), verifier=Verifier(key))


def edit_row(stack: Stack, version: int, **columns: str) -> None:
    """Change a version's row in the registry's database, as someone with access to it could."""
    database = stack.folder / "registry" / "registry.db"  # type: ignore[attr-defined]
    with sqlite3.connect(database) as conn:
        for column, value in columns.items():
            conn.execute(
                f"UPDATE versions SET {column} = ? WHERE model_name = 'demo' AND version = ?",
                (value, version),
            )


def test_loaders_verify_digest_and_signature(registry: Stack) -> None:
    created = upload(registry, seed=1)
    version = client(registry).version("demo", created["version"])
    assert version is not None and version.signature.startswith("ed25519:")
    assert client(registry).artifact("demo", version)  # verified
    with pytest.raises(ArtifactError, match="does not match this version"):  # another key's view
        client(registry, public_key=generate_keypair()[1]).artifact("demo", version)

    def fetch(number: int) -> bytes:
        found = client(registry).version("demo", number)
        assert found is not None
        return client(registry).artifact("demo", found)

    # someone edits the row: the category order (the encoding) of the input schema
    meta = json.loads(version.model_dump_json(include=set(VersionMetadata.model_fields)))
    color = next(f for f in meta["input_schema"]["features"] if f.get("categories"))
    color["categories"].reverse()
    edit_row(registry, version.version, metadata=json.dumps(meta))
    with pytest.raises(ArtifactError, match="does not match this version"):
        fetch(version.version)

    # two versions' digests and signatures swapped: each artifact is intact, but not that version
    second = upload(registry, seed=2)
    edit_row(registry, second["version"], digest=created["digest"], signature=created["signature"])
    with pytest.raises(ArtifactError, match="does not match this version"):
        fetch(second["version"])

    # an HMAC signature of the retired scheme is refused with the way out
    third = upload(registry, seed=3)
    edit_row(registry, third["version"], signature="hmac-sha256:" + "0" * 64)
    with pytest.raises(ArtifactError, match="retired HMAC signature"):
        fetch(third["version"])

    fourth = upload(registry, seed=4)
    path = registry.folder / "registry" / "artifacts" / fourth["digest"][7:9] / fourth["digest"][7:]  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-5] + b"xxxxx")  # tampered on disk
    with pytest.raises(ArtifactError, match="does not match its digest"):
        fetch(fourth["version"])


def test_each_role_may_do_only_its_part(registry: Stack) -> None:
    url = registry.url("registry")
    first, second = upload(registry, name="roles", seed=8), upload(registry, name="roles", seed=9)
    promote_first = f"{url}/v1/models/roles/versions/{first['version']}/promote"
    replaces = {"replaces": second["version"]}

    refused = httpx.post(promote_first, json=replaces, headers=registry.auth("trainer"))
    assert refused.status_code == 403 and "the trainer role may not do promoting" in refused.json()["detail"]
    for role in ("reader", "producer"):  # the producer's token is no registry role at all
        assert httpx.post(promote_first, json=replaces, headers=registry.auth(role)).status_code in (401, 403)
    assert httpx.post(f"{url}/v1/models/roles/rollback", headers=registry.auth("trainer")).status_code == 403

    # the monitor: only the loop's own changes (its challenger made champion, a named champion rolled back)
    not_challenger = httpx.post(promote_first, json=replaces, headers=registry.auth("monitor"))
    assert not_challenger.status_code == 403 and "only make the current challenger" in not_challenger.text
    unnamed = httpx.post(f"{url}/v1/models/roles/rollback", json={}, headers=registry.auth("monitor"))
    assert unnamed.status_code == 403 and "version it names" in unnamed.text
    rolled = httpx.post(f"{url}/v1/models/roles/rollback", json=replaces, headers=registry.auth("monitor"))
    assert rolled.status_code == 200 and rolled.json()["version"] == first["version"]
    unpromoted = upload_demo(registry, name="roles", seed=10, passed=False)  # behind no alias
    archive = f"{url}/v1/models/roles/versions/{unpromoted['version']}/archive"
    assert httpx.post(archive, headers=registry.auth("monitor")).status_code == 403
    assert httpx.post(archive, headers=registry.auth("operator")).json()["status"] == "archived"

    # uploads are the trainer's alone; a write is refused before its body is read
    for role in ("operator", "monitor", "reader"):
        assert httpx.post(f"{url}/v1/models/roles/versions", headers=registry.auth(role)).status_code == 403
    big = httpx.post(f"{url}/v1/models/roles/versions", content=b"x" * 3_000_000)
    assert big.status_code == 401

    # reads need a token once a reader token is configured (the generated set has one)
    artifact = f"{url}/v1/models/roles/versions/{first['version']}/artifact"
    assert httpx.get(artifact).status_code == 401 and httpx.get(f"{url}/v1/models").status_code == 401
    for role in ("reader", "trainer", "operator", "monitor"):
        assert httpx.get(artifact, headers=registry.auth(role)).status_code == 200
    assert httpx.get(f"{url}/v1/auth", headers=registry.auth("operator")).json() == {"role": "operator"}
    assert httpx.get(f"{url}/livez").status_code == 200  # probes stay open


def test_an_artifact_staged_ahead_of_its_version(registry: Stack) -> None:
    url, trainer = registry.url("registry"), registry.auth("trainer")
    artifact, artifact_digest = demo_artifact(rows=300, seed=21)
    meta = VersionMetadata(
        digest=artifact_digest,
        input_schema=demo_schema().model_copy(update={"name": "staged"}),
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="run-staged", trigger="manual"),
    )
    versions = f"{url}/v1/models/staged/versions"
    stored = registry.folder / "registry" / "artifacts" / artifact_digest[7:9] / artifact_digest[7:]  # type: ignore[attr-defined]

    # staging is the trainer's, verified as an upload is, and stores nothing
    put = f"{url}/v1/artifacts/{artifact_digest}"
    assert httpx.put(put, content=artifact, headers=registry.auth("operator")).status_code == 403
    lying = httpx.put(put, content=artifact[:-1] + b"x", headers=trainer)
    assert lying.status_code == 400 and "does not match the digest in the path" in lying.json()["detail"]
    untrusted = sio.dumps(FunctionTransformer(os.system))
    refused = httpx.put(f"{url}/v1/artifacts/{digest(untrusted)}", content=untrusted, headers=trainer)
    assert refused.status_code == 400 and "posix.system" in refused.json()["detail"]
    assert httpx.put(f"{url}/v1/artifacts/md5:abc", content=artifact, headers=trainer).status_code == 422
    assert httpx.put(put, content=artifact, headers=trainer).json() == {
        "digest": artifact_digest,
        "size": len(artifact),
    }
    assert not stored.exists()

    # the metadata alone registers the staged artifact; it is stored then, and only once
    alone = httpx.post(
        versions, content=meta.model_dump_json(), headers={**trainer, "Content-Type": "application/json"}
    )
    assert alone.status_code == 201 and alone.json()["digest"] == artifact_digest
    assert stored.read_bytes() == artifact
    again = httpx.post(
        versions, content=meta.model_dump_json(), headers={**trainer, "Content-Type": "application/json"}
    )
    assert again.status_code == 409 and "not staged on this registry replica" in again.json()["detail"]

    # the client: staged, then the metadata; or, when the registry did not take it, the form
    writer = RegistryClient(url, registry.token("trainer"))
    writer.stage(artifact)
    assert writer.upload("staged", artifact, meta).digest == artifact_digest
    writer.stage(b"not a model")  # refused by the registry: the upload sends the artifact itself
    assert writer.upload("staged", artifact, meta).digest == artifact_digest
    writer.close()
    outcomes = httpx.get(f"{url}/metrics").text
    assert 'ctloop_registry_uploads_total{outcome="staged"} 2.0' in outcomes
    assert 'ctloop_registry_uploads_total{outcome="not_staged"} 1.0' in outcomes


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
    assert [(e.type, e.payload["version"], e.payload.get("alias")) for e in mine] == [
        ("model.registered", created["version"], None),
        ("model.promoted", created["version"], "staging"),  # the default environments: staging,
        ("model.promoted", created["version"], "champion"),  # then production (both `auto`)
    ]
    assert {e.correlation_id for e in mine} == {"loop-paused"}


def test_approve_rollback_archive_lineage(registry: Stack) -> None:
    url, auth = registry.url("registry"), registry.auth("operator")
    first, second = upload(registry, name="flow", seed=4), upload(registry, name="flow", seed=5)
    assert (
        httpx.get(f"{url}/v1/models/flow/aliases/champion", headers=auth).json()["version"]
        == second["version"]
    )
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
    assert approved.json()["aliases"] == ["champion", "staging"]
    archived = httpx.post(f"{url}/v1/models/flow/versions/{first['version']}/archive", headers=auth)
    assert archived.json()["status"] == "archived"
    refused = httpx.post(f"{url}/v1/models/flow/versions/{first['version']}/promote", headers=auth)
    assert refused.status_code == 409 and "archived" in refused.json()["detail"]
    lineage = httpx.get(f"{url}/v1/models/flow/versions/{second['version']}/lineage", headers=auth).json()
    path = [(p["environment"], p["reason"], p["actor"]) for p in lineage["promotions"]]
    assert lineage["run_id"] == "run-5" and path == [
        ("staging", "policy: staging on upload", "trainer"),
        ("production", "policy: champion on upload", "trainer"),
        ("production", "worse live", "operator"),
        ("production", "approved", "operator"),
    ]
    events = httpx.get(f"{url}/v1/models/flow/events", headers=auth).json()
    assert [e["type"] for e in events].count("model.promoted") == 6


def test_models_cli(registry: Stack) -> None:
    upload(registry, name="cli", seed=6)
    upload(registry, name="cli", seed=7)
    env = {
        **os.environ,
        "CTLOOP_REGISTRY_URL": registry.url("registry"),
        "CTLOOP_OPERATOR_TOKEN": registry.token("operator"),
    }

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
    history = json.loads(ctloop("history", "cli", "--environment", "production").stdout)
    assert [h["version"] for h in history] == [1, 2, 1]
    assert json.loads(ctloop("lineage", "cli", "2").stdout)["run_id"] == "run-7"
    missing = ctloop("show", "nope")
    assert missing.returncode == 1 and "no model named 'nope'" in missing.stderr
