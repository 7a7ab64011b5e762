"""The model serializer: digest, round trip, and refusal of tampered or untrusted artifacts."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable

import numpy as np
import pytest
import skops.io as sio
from numpy.lib import format as npy_format
from sklearn.preprocessing import FunctionTransformer

from shared.features import encode_features
from shared.serialization import ArtifactError, digest, dump_model, load_model
from tests.fixtures import credit_examples, credit_schema, tiny_pipeline


@pytest.mark.parametrize(
    "estimator",
    ["sklearn.linear_model.LogisticRegression", "sklearn.ensemble.HistGradientBoostingClassifier"],
)
def test_round_trip_gives_identical_predictions(estimator: str) -> None:
    schema, examples = credit_schema(), credit_examples(400)
    params = {"max_iter": 500} if "Logistic" in estimator else {"max_iter": 20, "random_state": 0}
    model = tiny_pipeline(schema, examples, estimator, params)
    data, data_digest = dump_model(model)
    assert data_digest == digest(data) and data_digest.startswith("sha256:")
    x = encode_features(schema, [e.features for e in examples])
    assert np.array_equal(load_model(data, data_digest).predict_proba(x), model.predict_proba(x))  # type: ignore[attr-defined]


def test_artifacts_are_skops_files_as_its_own_dumps_writes_them() -> None:
    # dump_model writes skops's format itself (a compact schema.json): skops reads it as its
    # own, with the same entries and types as skops.io.dumps's file (array files are named by
    # object id, so the names differ from one dump to the next).
    schema, examples = credit_schema(), credit_examples(300)
    model = tiny_pipeline(
        schema, examples, "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 5}
    )
    ours, theirs = dump_model(model)[0], sio.dumps(model)
    with zipfile.ZipFile(io.BytesIO(ours)) as a, zipfile.ZipFile(io.BytesIO(theirs)) as b:
        assert len(a.namelist()) == len(b.namelist())
        assert len(a.read("schema.json")) < len(b.read("schema.json"))
        assert json.loads(a.read("schema.json"))["protocol"] == json.loads(b.read("schema.json"))["protocol"]
    assert sio.get_untrusted_types(data=ours) == sio.get_untrusted_types(data=theirs)
    x = encode_features(schema, [e.features for e in examples])
    trusted = sio.get_untrusted_types(data=theirs)
    assert np.array_equal(sio.loads(ours, trusted=trusted).predict_proba(x), model.predict_proba(x))


def test_tampered_artifact_is_refused() -> None:
    data, data_digest = dump_model(tiny_pipeline(credit_schema(), credit_examples(200)))
    tampered = data[:-10] + b"0123456789"
    with pytest.raises(ArtifactError, match="digest mismatch"):
        load_model(tampered, data_digest)


def test_untrusted_type_is_refused() -> None:
    # A FunctionTransformer carrying os.system: loading would hand it a callable to run.
    data = sio.dumps(FunctionTransformer(os.system))
    with pytest.raises(ArtifactError, match=r"untrusted types: \['posix.system'\]"):
        load_model(data)


def test_garbage_is_refused() -> None:
    with pytest.raises(ArtifactError, match="not a readable skops artifact"):
        load_model(b"\x80\x04 definitely not a zip")


ARRAYS = {
    "c_order": np.arange(12.0).reshape(3, 4),
    "fortran_order": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "structured": np.array([(1.5, 2, True)], dtype=[("value", "<f8"), ("count", "<u4"), ("leaf", "|u1")]),
    "empty": np.zeros((0, 8), dtype=np.uint32),
    "zero_dimensional": np.array(3.25),
    "big_endian": np.arange(5, dtype=">i8"),
    "nan_and_inf": np.array([np.nan, np.inf, -np.inf, -0.0]),
    "same_header_again": np.arange(12.0).reshape(3, 4) + 1,
}


def test_arrays_load_as_numpy_wrote_them() -> None:
    # The serializer parses each distinct `.npy` header once; every layout still comes back
    # exactly, as a writable array of its own.
    loaded = load_model(dump_model(ARRAYS)[0])
    assert isinstance(loaded, dict) and loaded.keys() == ARRAYS.keys()
    for name, array in ARRAYS.items():
        got = loaded[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        assert np.array_equal(got, array, equal_nan=array.dtype.kind == "f"), name
        assert got.flags.writeable, name
    assert loaded["fortran_order"].flags.f_contiguous


def _lying_header(content: bytes) -> bytes:
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**40, 2**40)}
    )
    return header.getvalue() + content[-16:]


@pytest.mark.parametrize(
    "damage", [lambda content: content[:-8], _lying_header], ids=["truncated", "shape_beyond_its_data"]
)
def test_an_array_shorter_than_its_header_says_is_refused(damage: Callable[[bytes], bytes]) -> None:
    data = dump_model({"a": np.arange(100.0)})[0]
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            target.writestr(name, damage(content) if name.endswith(".npy") else content)
    with pytest.raises(ArtifactError, match="not a readable skops artifact"):
        load_model(out.getvalue())
