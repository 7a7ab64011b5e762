"""The artifact store on a local folder and an fsspec URL (no half-written artifact after a
crash), and start-up refusal of placeholder secrets outside dev mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.registry.artifacts import ArtifactStore
from shared.serialization import digest
from shared.settings import RegistrySettings


@pytest.mark.parametrize("where", ["folder", "memory"])
def test_store_round_trip_and_idempotence(tmp_path: Path, where: str) -> None:
    store = ArtifactStore(tmp_path / "a" if where == "folder" else f"memory://{tmp_path.name}")
    key = store.put(b"bytes of a model")
    assert key == digest(b"bytes of a model")
    assert store.put(b"bytes of a model") == key and store.get(key) == b"bytes of a model"
    with pytest.raises(FileNotFoundError):
        store.get(digest(b"never stored"))
    with pytest.raises(ValueError, match="not a sha256 digest"):
        store.get("sha256:../../etc/passwd")


def test_a_crash_mid_write_leaves_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)

    def crash(source: str, target: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(store.fs, "mv", crash)
    with pytest.raises(OSError, match="disk vanished"):
        store.put(b"half")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # neither the artifact nor a temp file


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CTLOOP_REGISTRY_TOKEN", "dev-token"),
        ("CTLOOP_REGISTRY_TOKEN", "short"),
        ("CTLOOP_SIGNING_KEY", "dev-signing-key"),
    ],
)
def test_placeholder_secrets_are_refused_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("CTLOOP_DEV_MODE", "false")
    monkeypatch.setenv("CTLOOP_REGISTRY_TOKEN", "a-real-token-0123456789")
    monkeypatch.setenv("CTLOOP_SIGNING_KEY", "a-real-signing-key-0123456789")
    RegistrySettings()  # real secrets: fine
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=f"{variable} is a placeholder") as refused:
        RegistrySettings()
    # the error names the variable, never a secret's value (pydantic echoed its input)
    assert "input_value" not in str(refused.value)
    for secret in ("a-real-token", "a-real-signing", f"'{value}'"):
        assert secret not in str(refused.value)
    monkeypatch.setenv("CTLOOP_DEV_MODE", "true")
    RegistrySettings()  # dev mode allows them


@pytest.mark.parametrize("configured", ["", "a-real-token-0123456789"])
def test_an_empty_bearer_token_never_writes_to_the_registry(tmp_path: Path, configured: str) -> None:
    from fastapi.testclient import TestClient

    from services.registry.app import build_app
    from services.registry.artifacts import ArtifactStore
    from services.registry.migrate import migrate
    from services.registry.store import RegistryStore
    from shared.events import Source

    store = RegistryStore(
        f"sqlite:///{tmp_path / 'r.db'}", Source(service="registry", instance="t"), signer=str
    )
    migrate(store.engine)
    settings = RegistrySettings(registry_token=configured, dev_mode=True)
    with TestClient(build_app(settings, store, ArtifactStore(tmp_path / "artifacts"))) as client:
        for header in ("Bearer ", "Bearer", "bearer  ", ""):
            assert client.get("/v1/auth", headers={"Authorization": header}).status_code == 401, header
        if configured:
            assert (
                client.get("/v1/auth", headers={"Authorization": f"Bearer {configured}"}).status_code == 200
            )
