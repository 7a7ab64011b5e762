"""Materializes a training set as a versioned dataset: Parquet rows plus a manifest.

The version is the content hash of the rows, so the same examples always give the same
dataset version, and the manifest says where they came from (topic, partition offset ranges,
time range) so it can be found and checked again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shared.events import Example
from shared.registry_api import DatasetManifest
from shared.schema import DatasetSchema
from shared.topics import EXAMPLES


def columns(schema: DatasetSchema, examples: list[Example]) -> dict[str, list[object]]:
    data: dict[str, list[object]] = {
        "record_id": [e.record_id for e in examples],
        "event_time": [e.event_time for e in examples],
        "label": [str(e.label) for e in examples],
        "prediction": [None if e.prediction is None else str(e.prediction) for e in examples],
        "model_version": [e.model_version for e in examples],
    }
    for spec in schema.features:
        values = [e.features.get(spec.name) for e in examples]
        data[f"feature.{spec.name}"] = (
            values if spec.type == "numeric" else [None if v is None else str(v) for v in values]
        )
    return data


def materialize(
    schema: DatasetSchema,
    examples: list[Example],
    folder: Path,
    holdout_rows: int,
    offsets: dict[str, list[int]],
) -> DatasetManifest:
    data = columns(schema, examples)
    # NOTE: the hash is over the Parquet bytes (deterministic for the same rows and pyarrow);
    # hashing a canonical JSON dump of 50k rows cost more than writing the file.
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table(data), buffer)
    content = buffer.getvalue().to_pybytes()
    sha = hashlib.sha256(content).hexdigest()
    version = sha[:16]
    target = folder / version
    manifest = DatasetManifest(
        version=version,
        rows=len(examples),
        holdout_rows=holdout_rows,
        time_start=examples[0].event_time,
        time_end=examples[-1].event_time,
        sha256=f"sha256:{sha}",
        source=EXAMPLES,
        offsets=offsets,
        columns=list(data),
        path=f"{version}/data.parquet",
    )
    if not (target / "manifest.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        # NOTE: the manifest is written last, so a dataset folder with a manifest is complete.
        (target / "data.parquet").write_bytes(content)
        tmp = target / "manifest.json.tmp"
        tmp.write_text(manifest.model_dump_json(indent=2))
        tmp.replace(target / "manifest.json")
    return manifest
