"""The training pipeline built from the dataset schema: impute, scale, one-hot, estimator.

It takes the matrix of `shared.features.encode_features`; unseen categories (encoded -1)
one-hot to all zeros, missing values are imputed. The estimator is configurable by import path.
"""

from __future__ import annotations

import importlib

from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.features import column_indices
from shared.schema import CategoricalFeature, DatasetSchema


def make_estimator(import_path: str, params: dict[str, object]) -> ClassifierMixin:
    module_name, _, class_name = import_path.rpartition(".")
    if not module_name.startswith("sklearn."):
        raise ValueError(f"estimator {import_path!r}: only scikit-learn estimators are supported")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**params)


def build_pipeline(schema: DatasetSchema, estimator: ClassifierMixin) -> Pipeline:
    numeric, categorical = column_indices(schema)
    parts = []
    if numeric:
        parts.append(
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        codes = [
            [float(i) for i in range(len(f.categories))]
            for f in schema.features
            if isinstance(f, CategoricalFeature)
        ]
        parts.append(
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
                        (
                            "onehot",
                            OneHotEncoder(categories=codes, handle_unknown="ignore", sparse_output=False),
                        ),
                    ]
                ),
                categorical,
            )
        )
    return Pipeline([("prepare", ColumnTransformer(parts)), ("model", estimator)])
