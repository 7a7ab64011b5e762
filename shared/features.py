"""Turns validated feature dicts into the numeric matrix every ctloop model takes.

The encoding is driven by the dataset schema, so it works for any dataset: numeric features
as floats (NaN when missing), categorical ones as the index of the category in the schema
(NaN when missing, -1 when unseen). The trainer's pipeline imputes, scales and one-hot
encodes from there; serving encodes requests the same way, with the schema stored in the
model version.

>>> from shared.schema import DatasetSchema
>>> s = DatasetSchema.model_validate({"name": "t", "label": {"classes": [0, 1]},
...     "features": [{"name": "a", "type": "numeric"},
...                  {"name": "c", "type": "categorical", "categories": ["u", "v"]}]})
>>> encode_features(s, [{"a": 1.5, "c": "v"}, {"a": None, "c": "w"}]).tolist()
[[1.5, 1.0], [nan, -1.0]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from shared.schema import CategoricalFeature, DatasetSchema

UNSEEN = -1.0


def _category_codes(spec: CategoricalFeature) -> dict[object, float]:
    """A category's code is its index in the schema; missing is NaN (unseen: `UNSEEN`)."""
    codes: dict[object, float] = {c: float(i) for i, c in enumerate(spec.categories)}
    codes[None] = math.nan
    return codes


def encode_features(schema: DatasetSchema, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Encode rows of already-validated features into an (n_rows, n_features) float matrix."""
    matrix = np.empty((len(rows), len(schema.features)), dtype=np.float64)
    # A column at a time through numpy (None becomes NaN): 1.5x faster than cell by cell at
    # training sizes, and a few microseconds either way for one row.
    for j, spec in enumerate(schema.features):
        name = spec.name
        if isinstance(spec, CategoricalFeature):
            codes = _category_codes(spec)
            matrix[:, j] = [codes.get(row.get(name), UNSEEN) for row in rows]
        else:
            matrix[:, j] = np.array([row.get(name) for row in rows], dtype=np.float64)
    return matrix


class RowEncoder:
    """Encodes one row at a time exactly as `encode_features` encodes a batch; for callers that
    see rows one by one (the trainer's store encodes each example as it arrives, so a run
    does not encode its whole window on its critical path).

    >>> from shared.schema import DatasetSchema
    >>> s = DatasetSchema.model_validate({"name": "t", "label": {"classes": [0, 1]},
    ...     "features": [{"name": "a", "type": "numeric"},
    ...                  {"name": "c", "type": "categorical", "categories": ["u", "v"]}]})
    >>> RowEncoder(s)({"a": None, "c": "w"})
    [nan, -1.0]
    """

    def __init__(self, schema: DatasetSchema) -> None:
        self._columns = [
            (spec.name, _category_codes(spec) if isinstance(spec, CategoricalFeature) else None)
            for spec in schema.features
        ]

    def __call__(self, row: Mapping[str, object]) -> list[float]:
        values = []
        for name, codes in self._columns:
            value = row.get(name)
            if codes is not None:
                values.append(codes.get(value, UNSEEN))
            else:
                values.append(math.nan if value is None else float(value))  # type: ignore[arg-type]
        return values


def column_indices(schema: DatasetSchema) -> tuple[list[int], list[int]]:
    """Indices of the numeric and of the categorical columns of the encoded matrix."""
    numeric = [j for j, f in enumerate(schema.features) if f.type == "numeric"]
    categorical = [j for j, f in enumerate(schema.features) if f.type == "categorical"]
    return numeric, categorical
