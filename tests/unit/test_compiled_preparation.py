"""The compiled preparation step answers exactly what scikit-learn's would, and is refused for
any structure it was not written for."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

from services.serving.model import LoadedModel
from services.trainer.pipeline import build_pipeline
from shared.compiled_preparation import compile_preparation
from shared.features import encode_features
from tests.fixtures import (
    credit_examples,
    credit_schema,
    demo_examples,
    demo_schema,
    model_version,
    tiny_pipeline,
)

ESTIMATORS = ["sklearn.linear_model.LogisticRegression", "sklearn.ensemble.HistGradientBoostingClassifier"]


def _messy_rows(schema, n: int, seed: int) -> np.ndarray:
    """Encoded rows with missing values and unseen category codes in every column."""
    rng = np.random.default_rng(seed)
    matrix = encode_features(schema, [e.features for e in credit_examples(n, seed=seed)])
    matrix[rng.random(matrix.shape) < 0.1] = np.nan
    categorical = [j for j, f in enumerate(schema.features) if f.type == "categorical"]
    for j in categorical:
        matrix[rng.random(n) < 0.1, j] = -1.0
    return matrix


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_the_trainers_pipeline_compiles_and_prepares_bit_for_bit(estimator):
    schema = credit_schema()
    pipeline = tiny_pipeline(schema, credit_examples(400), estimator, {})
    compiled = compile_preparation(pipeline)
    assert compiled is not None
    for seed in range(5):
        rows = _messy_rows(schema, 300, seed)
        assert np.array_equal(compiled(rows), pipeline[0].transform(rows))
        assert np.array_equal(compiled(rows[:1]), pipeline[0].transform(rows[:1]))


def test_a_column_missing_in_every_training_row_is_filled_as_scikit_learn_fills_it():
    schema = credit_schema()
    examples = credit_examples(200)
    for e in examples:
        e.features["income"] = None
    pipeline = tiny_pipeline(schema, examples)
    compiled = compile_preparation(pipeline)
    assert compiled is not None
    rows = _messy_rows(schema, 100, 1)
    assert np.array_equal(compiled(rows), pipeline[0].transform(rows))


def _fitted(prepare: ColumnTransformer) -> Pipeline:
    x = np.random.default_rng(0).normal(size=(50, 5))
    x[:, 4] = np.arange(len(x)) % 3
    return Pipeline([("prepare", prepare), ("model", LogisticRegression())]).fit(x, np.arange(len(x)) % 2)


@pytest.mark.parametrize(
    "prepare",
    [
        ColumnTransformer(
            [("num", Pipeline([("impute", SimpleImputer()), ("scale", MinMaxScaler())]), [0, 1, 2, 3])]
        ),
        ColumnTransformer(
            [
                (
                    "cat",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="most_frequent")),
                            ("onehot", OneHotEncoder(min_frequency=5, handle_unknown="infrequent_if_exist")),
                        ]
                    ),
                    [4],
                )
            ]
        ),
        ColumnTransformer([("pass", "passthrough", [0, 1])]),
        ColumnTransformer(
            [("num", Pipeline([("impute", SimpleImputer(add_indicator=True))]), [0])], remainder="passthrough"
        ),
    ],
    ids=["another-scaler", "infrequent-categories", "passthrough", "remainder"],
)
def test_any_other_structure_keeps_scikit_learns_path(prepare):
    assert compile_preparation(_fitted(prepare)) is None


def test_a_loaded_model_predicts_as_the_pipeline_does_through_the_compiled_step():
    schema = demo_schema()
    examples = demo_examples(300, seed=0)
    pipeline = tiny_pipeline(schema, examples)
    loaded = LoadedModel(version=model_version(schema, {}), pipeline=pipeline)
    assert loaded.predictor.compiled
    rows = [e.features for e in examples[:50]]
    _, probabilities = loaded.predict(rows)
    expected = pipeline.predict_proba(encode_features(schema, rows))
    got = np.array([[p[k] for k in schema.class_keys] for p in probabilities])
    assert np.array_equal(got, expected)


def test_a_pipeline_it_cannot_compile_still_predicts():
    schema = demo_schema()
    examples = demo_examples(100, seed=0)
    x = encode_features(schema, [e.features for e in examples])
    y = [schema.label.classes.index(e.label) for e in examples]
    pipeline = build_pipeline(schema, LogisticRegression())
    pipeline.steps[0][1].transformers[0][1].steps[1] = ("scale", MinMaxScaler())
    pipeline.fit(x, y)
    loaded = LoadedModel(version=model_version(schema, {}), pipeline=pipeline)
    assert not loaded.predictor.compiled
    _, probabilities = loaded.predict([examples[0].features])
    assert list(probabilities[0].values()) == pytest.approx(pipeline.predict_proba(x[:1])[0].tolist())
