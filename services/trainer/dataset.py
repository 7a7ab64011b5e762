"""Materializes a training set as a versioned dataset: Parquet rows plus a manifest.

The version is the content hash of the rows, so the same examples always give the same
dataset version, and the manifest says where they came from (topic, partition offset ranges,
time range) so it can be found and checked again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared.events import Example
from shared.registry_api import DatasetManifest
from shared.schema import DatasetSchema
from shared.topics import EXAMPLES


def columns(
    schema: DatasetSchema, examples: list[Example], x: np.ndarray
) -> dict[str, pa.Array | list[object]]:
    """The dataset's columns; numeric features come from `x`, the examples' encoded matrix
    (validated numbers are finite, so NaN there means missing: null in the file)."""
    data: dict[str, pa.Array | list[object]] = {
        "record_id": [e.record_id for e in examples],
        "event_time": pa.array([e.event_time for e in examples], pa.timestamp("us", tz="UTC")),
        "label": [str(e.label) for e in examples],
        "prediction": [None if e.prediction is None else str(e.prediction) for e in examples],
        "model_version": [e.model_version for e in examples],
    }
    for j, spec in enumerate(schema.features):
        if spec.type == "numeric":
            data[f"feature.{spec.name}"] = pa.array(x[:, j], from_pandas=True)
        else:
            values = [e.features.get(spec.name) for e in examples]
            data[f"feature.{spec.name}"] = [None if v is None else str(v) for v in values]
    return data


def materialize(
    schema: DatasetSchema,
    examples: list[Example],
    x: np.ndarray,
    folder: Path,
    holdout_rows: int,
    offsets: dict[str, list[int]],
) -> DatasetManifest:
    """Write the examples (`x`: their encoded features) as a dataset version, once per content,
    and return its manifest."""
    table = pa.table(columns(schema, examples, x))
    # NOTE: the hash is over the Parquet bytes (deterministic for the same rows and pyarrow);
    # hashing a canonical JSON dump of 50k rows cost more than writing the file.
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    content = buffer.getvalue().to_pybytes()
    sha = hashlib.sha256(content).hexdigest()
    version = sha[:16]
    target = folder / version
    manifest = DatasetManifest(
        version=version,
        rows=table.num_rows,
        holdout_rows=holdout_rows,
        time_start=examples[0].event_time,
        time_end=examples[-1].event_time,
        sha256=f"sha256:{sha}",
        source=EXAMPLES,
        offsets=offsets,
        columns=table.column_names,
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


def prune_datasets(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` dataset folders (by the time their manifest was
    written); the versions deleted. A folder without a manifest is a write in progress (or
    one cut off by a crash) and is left alone."""
    if not folder.is_dir():
        return []
    complete = [d for d in folder.iterdir() if (d / "manifest.json").is_file()]
    complete.sort(key=lambda d: (d / "manifest.json").stat().st_mtime, reverse=True)
    gone = []
    for old in complete[keep:]:
        (old / "manifest.json").unlink()  # first: a folder without a manifest is never read
        shutil.rmtree(old, ignore_errors=True)
        gone.append(old.name)
    return gone
