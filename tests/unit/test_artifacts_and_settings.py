"""The artifact stores on a local folder, an fsspec URL (no half-written artifact after a
crash) and a database (with what a folder held copied in), artifacts staged in memory, and start-up refusal of missing
or placeholder credentials outside dev mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from services.registry.artifacts import (
    DATABASE,
    Artifacts,
    ArtifactStore,
    DatabaseArtifacts,
    StagedArtifacts,
    open_artifacts,
)
from services.registry.migrate import migrate
from shared.serialization import digest
from shared.settings import CredentialsError, RegistrySettings
from shared.signing import Signer, dev_keypair, generate_keypair


def store_at(where: str, tmp_path: Path) -> Artifacts:
    if where == "database":
        engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
        migrate(engine)
        return open_artifacts(DATABASE, engine, tmp_path / "no-folder")
    return ArtifactStore(tmp_path / "a" if where == "folder" else f"memory://{tmp_path.name}")


@pytest.mark.parametrize("where", ["folder", "memory", "database"])
def test_store_round_trip_and_idempotence(tmp_path: Path, where: str) -> None:
    store = store_at(where, tmp_path)
    key = store.put(b"bytes of a model")
    assert key == digest(b"bytes of a model")
    assert store.put(b"bytes of a model") == key and store.get(key) == b"bytes of a model"
    with pytest.raises(FileNotFoundError):
        store.get(digest(b"never stored"))
    with pytest.raises(ValueError, match="not a sha256 digest"):
        store.get("sha256:../../etc/passwd")


def test_staged_artifacts_are_taken_once_and_the_oldest_or_expired_are_dropped() -> None:
    staged = StagedArtifacts(kept=2, ttl_s=3600)
    for data in (b"first", b"second", b"third"):
        staged.add(digest(data), data)
    assert staged.take(digest(b"first")) is None  # only the newest two are held
    assert staged.take(digest(b"third")) == b"third"
    assert staged.take(digest(b"third")) is None  # a version took it
    assert staged.take(digest(b"second")) == b"second"
    expired = StagedArtifacts(kept=2, ttl_s=0.0)
    expired.add(digest(b"old"), b"old")
    assert expired.take(digest(b"old")) is None


def test_a_registry_moved_to_the_database_copies_its_folder_in(tmp_path: Path) -> None:
    folder = ArtifactStore(tmp_path / "artifacts")
    old = [folder.put(f"model {i}".encode()) for i in range(3)]
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate(engine)
    store = open_artifacts(DATABASE, engine, tmp_path / "artifacts")
    assert [store.get(key) for key in old] == [f"model {i}".encode() for i in range(3)]
    assert isinstance(store, DatabaseArtifacts) and store.copy_from(folder) == 0  # once


def test_a_crash_mid_write_leaves_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)

    def crash(source: str, target: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(store.fs, "mv", crash)
    with pytest.raises(OSError, match="disk vanished"):
        store.put(b"half")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # neither the artifact nor a temp file


REAL = {
    "CTLOOP_TRAINER_TOKEN": "a-real-trainer-token-0123456789",
    "CTLOOP_OPERATOR_TOKEN": "a-real-operator-token-0123456789",
    "CTLOOP_MONITOR_TOKEN": "a-real-monitor-token-0123456789",
}


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("CTLOOP_TRAINER_TOKEN", "dev-token", "is a placeholder"),
        ("CTLOOP_OPERATOR_TOKEN", "short", "is a placeholder"),
        ("CTLOOP_MONITOR_TOKEN", "dev-monitor-token", "is a placeholder"),
        ("CTLOOP_MONITOR_TOKEN", "", "is not set"),
        ("CTLOOP_SIGNING_PRIVATE_KEY", dev_keypair()[0], "is the public development key"),
        ("CTLOOP_SIGNING_PRIVATE_KEY", "", "is not set"),
        ("CTLOOP_SIGNING_PRIVATE_KEY", "bm90IGEga2V5", "is not a valid key"),
        ("CTLOOP_REGISTRY_TOKEN", "a-real-old-token-0123456789", "is retired"),
    ],
)
def test_missing_or_placeholder_credentials_are_refused_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    private, _ = generate_keypair()
    for name, real in {**REAL, "CTLOOP_SIGNING_PRIVATE_KEY": private}.items():
        monkeypatch.setenv(name, real)
    registry = ("trainer", "operator", "monitor")
    RegistrySettings().require(*registry, private_key=True)  # real credentials: fine
    assert not RegistrySettings().dev_mode  # the default
    monkeypatch.setenv(variable, value)
    with pytest.raises(CredentialsError, match=f"{variable} {reason}") as refused:
        RegistrySettings().require(*registry, private_key=True)
    # the error names the variable, never a secret's value
    for secret in (*REAL.values(), private, *([value] if len(value) > 5 else [])):
        assert secret not in str(refused.value)
    if reason not in ("is retired", "is not a valid key"):  # wrong in any mode
        monkeypatch.setenv("CTLOOP_DEV_MODE", "true")
        RegistrySettings().require(*registry, private_key=True)  # dev mode allows them


def test_dev_mode_falls_back_to_public_placeholders() -> None:
    settings = RegistrySettings(dev_mode=True)
    assert settings.token("trainer") == "dev-trainer-token" and settings.token("reader") == ""
    assert RegistrySettings().token("trainer") == ""  # outside dev mode: nothing to fall back to


@pytest.mark.parametrize("configured", ["", "a-real-token-0123456789"])
def test_an_empty_bearer_token_never_writes_to_the_registry(tmp_path: Path, configured: str) -> None:
    from fastapi.testclient import TestClient

    from services.registry.app import build_app
    from services.registry.migrate import migrate
    from services.registry.store import RegistryStore
    from shared.events import Source

    store = RegistryStore(
        f"sqlite:///{tmp_path / 'r.db'}",
        Source(service="registry", instance="t"),
        signer=Signer(generate_keypair()[0]),
    )
    migrate(store.engine)
    settings = RegistrySettings(trainer_token=configured)
    with TestClient(build_app(settings, store, ArtifactStore(tmp_path / "artifacts"))) as client:
        for header in ("Bearer ", "Bearer", "bearer  ", ""):
            assert client.get("/v1/auth", headers={"Authorization": header}).status_code == 401, header
            assert (
                client.post("/v1/models/demo/versions", headers={"Authorization": header}).status_code == 401
            )
        if configured:
            answer = client.get("/v1/auth", headers={"Authorization": f"Bearer {configured}"})
            assert answer.status_code == 200 and answer.json() == {"role": "trainer"}
