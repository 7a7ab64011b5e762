"""Serving's on-disk cache of the last verified champion: it is verified again when loaded,
so tampered bytes or a forged signature are refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.serving.holder import ModelHolder
from shared.registry_api import GateReport, Lineage, ModelVersion
from shared.signing import Signer, Verifier, generate_keypair
from tests.fixtures import demo_artifact, demo_schema

PRIVATE, PUBLIC = generate_keypair()


class _Registry:
    verifier = Verifier(PUBLIC)


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


@pytest.mark.parametrize("damage", ["none", "bytes", "signature", "schema"])
def test_cached_model_is_verified_when_loaded(tmp_path: Path, damage: str) -> None:
    artifact, digest = demo_artifact()
    writer = ModelHolder(demo_schema(), _Registry(), cache_dir=tmp_path)  # type: ignore[arg-type]
    signer = Signer(PRIVATE if damage != "signature" else generate_keypair()[0])
    signed = version(digest, "")
    signature = signer.sign("demo", 4, digest, signed.input_schema.model_dump(mode="json"))
    cached = version(digest, signature)
    if damage == "schema":  # the categories' order (the encoding) edited in the cached metadata
        categories = next(c for f in cached.input_schema.features if (c := getattr(f, "categories", None)))
        categories.reverse()
    writer._save_cache(cached, artifact)
    if damage == "bytes":
        (tmp_path / "artifact.skops").write_bytes(artifact[:-4] + b"evil")
    reader = ModelHolder(demo_schema(), _Registry(), cache_dir=tmp_path)  # type: ignore[arg-type]
    assert reader.load_cache() is (damage == "none")
    assert (reader.current is not None) is (damage == "none")
    if damage == "none":
        assert reader.current.number == 4  # type: ignore[union-attr]


def test_no_cache_no_model(tmp_path: Path) -> None:
    assert ModelHolder(demo_schema(), _Registry(), cache_dir=tmp_path / "empty").load_cache() is False  # type: ignore[arg-type]
