"""Shared test fixtures: the two schemas, generated data, a tiny trained pipeline, a Kafka
message as a consumer hands it over."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka.consumer.fetcher import ConsumerRecord

from services.trainer.pipeline import build_pipeline, make_estimator
from shared.events import Example
from shared.features import encode_features
from shared.registry_api import GateReport, Lineage, ModelVersion, ReferenceProfile
from shared.schema import DatasetSchema, load_schema
from shared.settings import DEFAULT_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
CREDIT_SCHEMA = ROOT / "examples" / "schemas" / "credit.yaml"


def demo_schema() -> DatasetSchema:
    return load_schema(DEFAULT_SCHEMA)


def credit_schema() -> DatasetSchema:
    return load_schema(CREDIT_SCHEMA)


def credit_examples(n: int, seed: int = 0, start: datetime | None = None) -> list[Example]:
    """Labelled examples of the second schema with a learnable rule."""
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        age = rng.uniform(18, 80)
        income = None if rng.random() < 0.1 else rng.uniform(0, 200_000)
        debt = rng.uniform(0, 3)
        features = {
            "age": age,
            "income": income,
            "debt_ratio": debt,
            "housing": rng.choice(["own", "rent", "mortgage", "other"]),
            "purpose": rng.choice(["car", "home", "education", "business"]),
        }
        label = "yes" if debt > 1.2 + (age - 18) / 100 else "no"
        out.append(
            Example(
                record_id=f"app-{i}", event_time=start + timedelta(seconds=i), features=features, label=label
            )
        )
    return out


def tiny_pipeline(
    schema: DatasetSchema,
    examples: list[Example],
    estimator: str = "sklearn.linear_model.LogisticRegression",
    params: dict[str, object] | None = None,
):
    x = encode_features(schema, [e.features for e in examples])
    y = [schema.label.classes.index(e.label) for e in examples]
    return build_pipeline(schema, make_estimator(estimator, params or {"max_iter": 500})).fit(x, y)


def model_version(
    schema: DatasetSchema,
    sample: dict[str, list[object]],
    accuracy: float = 0.92,
    version: int = 1,
    predictions: dict[str, list[object]] | None = None,
) -> ModelVersion:
    """A registry version carrying a reference profile, as the monitor receives it."""
    return ModelVersion(
        name=schema.name,
        version=version,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        digest="sha256:" + "0" * 64,
        input_schema=schema,
        gate_report=GateReport(passed=True, gates=[]),
        reference_profile=ReferenceProfile(
            sample=sample,  # type: ignore[arg-type]
            validation_accuracy=accuracy,
            predictions=predictions or {},  # type: ignore[arg-type]
        ),
        lineage=Lineage(run_id="run-test", trigger="manual"),
    )


def demo_rows(n: int, seed: int, shift_x3_from: int | None = None) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        shift = 1.0 if shift_x3_from is not None and i >= shift_x3_from else 0.0
        rows.append(
            {
                "x1": rng.gauss(0, 1),
                "x2": rng.gauss(0, 1),
                "x3": rng.gauss(shift, 1),
                "amount": rng.expovariate(1 / 50),
                "color": rng.choice(["red", "green", "blue"]),
            }
        )
    return rows


def demo_artifact(
    rows: int = 200,
    seed: int = 1,
    estimator: str = "sklearn.linear_model.LogisticRegression",
    params: dict[str, object] | None = None,
) -> tuple[bytes, str]:
    """A small trained demo-schema pipeline, serialized: (artifact bytes, digest)."""
    from shared.serialization import dump_model

    return dump_model(tiny_pipeline(demo_schema(), demo_examples(rows, seed), estimator, params))


def demo_examples(rows: int, seed: int) -> list[Example]:
    """Labelled demo rows (label: x1 > 0)."""
    return [
        Example(
            record_id=f"u-{i}",
            event_time=datetime(2026, 11, 21, tzinfo=UTC),
            features=r,  # type: ignore[arg-type]
            label=int(float(r["x1"]) > 0),
        )  # type: ignore[arg-type]
        for i, r in enumerate(demo_rows(rows, seed=seed))
    ]


def consumer_record(topic: str, value: bytes, offset: int = 0, key: bytes = b"demo") -> ConsumerRecord:
    """A message as `KafkaConsumer.poll` returns it, for handlers tested without a broker."""
    return ConsumerRecord(
        topic=topic,
        partition=0,
        leader_epoch=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        headers=[],
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        serialized_header_size=0,
    )
