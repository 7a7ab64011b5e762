"""Serving's on-disk cache of the last verified champion: it is verified again when loaded,
so tampered bytes or a forged signature are refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.serving.holder import ModelHolder
from shared.registry_api import GateReport, Lineage, ModelVersion
from shared.signing import sign
from tests.fixtures import demo_artifact, demo_schema

KEY = "cache-test-signing-key-0123"


class _Registry:
    signing_key = KEY


def version(digest: str, signature: str) -> ModelVersion:
    return ModelVersion(
        name="demo",
        version=4,
        created_at=datetime.now(UTC),
        digest=digest,
        signature=signature,
        input_schema=demo_schema(),
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="r", trigger="manual"),
    )


@pytest.mark.parametrize("damage", ["none", "bytes", "signature"])
def test_cached_model_is_verified_when_loaded(tmp_path: Path, damage: str) -> None:
    artifact, digest = demo_artifact()
    writer = ModelHolder(demo_schema(), _Registry(), cache_dir=tmp_path)  # type: ignore[arg-type]
    signature = sign(KEY, digest) if damage != "signature" else sign("another-key-altogether", digest)
    writer._save_cache(version(digest, signature), artifact)
    if damage == "bytes":
        (tmp_path / "artifact.skops").write_bytes(artifact[:-4] + b"evil")
    reader = ModelHolder(demo_schema(), _Registry(), cache_dir=tmp_path)  # type: ignore[arg-type]
    assert reader.load_cache() is (damage == "none")
    assert (reader.current is not None) is (damage == "none")
    if damage == "none":
        assert reader.current.number == 4  # type: ignore[union-attr]


def test_no_cache_no_model(tmp_path: Path) -> None:
    assert ModelHolder(demo_schema(), _Registry(), cache_dir=tmp_path / "empty").load_cache() is False  # type: ignore[arg-type]
