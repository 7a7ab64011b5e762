"""A loaded model version: its pipeline, its input schema, and how it turns records into
predictions with class probabilities keyed by the schema's classes.

The pipeline's preparation step runs compiled (`shared.compiled_preparation`) when it is the
trainer's own and proven equal to scikit-learn's; otherwise through scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.pipeline import Pipeline

from shared.compiled_preparation import Predictor
from shared.features import encode_features
from shared.registry_api import ModelVersion
from shared.schema import DatasetSchema, LabelValue
from shared.validation import Row


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    pipeline: Pipeline
    predictor: Predictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "predictor", Predictor.of(self.pipeline))  # frozen: set once, here

    @property
    def number(self) -> int:
        return self.version.version

    @property
    def schema(self) -> DatasetSchema:
        return self.version.input_schema

    def predict(self, rows: list[Row]) -> tuple[list[LabelValue], list[dict[str, float]]]:
        """Predicted classes and per-class probabilities for validated feature dicts."""
        classes = self.schema.label.classes
        keys = self.schema.class_keys
        proba = self.predictor.predict_proba(encode_features(self.schema, rows))
        # The pipeline was fit on class indices, maybe not all of them: spread into all classes.
        full = np.zeros((len(rows), len(classes)))
        full[:, self.pipeline.classes_.astype(int)] = proba
        best = full.argmax(axis=1)
        predictions = [classes[i] for i in best]
        probabilities = [{k: float(p) for k, p in zip(keys, row, strict=True)} for row in full]
        return predictions, probabilities

    def synthetic_row(self) -> Row:
        """A valid row made from the schema (first category, minimum or 0)."""
        row: Row = {}
        for f in self.schema.features:
            row[f.name] = f.categories[0] if f.type == "categorical" else (f.min or 0.0)
        return row

    def warm_up(self) -> None:
        """One predict on a synthetic row so the first request pays no lazy set-up."""
        self.predict([self.synthetic_row()])
