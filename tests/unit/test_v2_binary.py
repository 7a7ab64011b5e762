"""The V2 binary tensor data extension's decoder: the values tritonclient packs come back, and
every way the bytes can lie is a 400 or 422 naming the input, never an exception of another
kind."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from services.serving.v2 import InferenceRequest, parse_request
from services.serving.v2_binary import NUMPY_TYPES, attach_inputs, decode_tensor, encode_tensor, split_body
from shared.http import BadRequest, ServiceError, Unprocessable


def request_of(*tensors: tuple[str, str, list[int], int | None]) -> InferenceRequest:
    inputs: list[dict[str, Any]] = []
    for name, datatype, shape, size in tensors:
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if size is not None:
            tensor["parameters"] = {"binary_data_size": size}
        inputs.append(tensor)
    return parse_request(json.dumps({"inputs": inputs}).encode())


def test_numbers_and_bytes_round_trip_as_tritonclient_packs_them() -> None:
    numbers = np.array([0.5, -1.25, 3.0])
    words = encode_tensor("BYTES", ["red", "blue", "é"])
    request = request_of(
        ("x1", "FP64", [3], 24), ("color", "BYTES", [3], len(words)), ("n", "INT32", [3], 12)
    )
    attach_inputs(request.inputs, numbers.tobytes() + words + np.array([1, 2, 3], dtype="<i4").tobytes())
    assert [t.data for t in request.inputs] == [[0.5, -1.25, 3.0], ["red", "blue", "é"], [1, 2, 3]]


@pytest.mark.parametrize(
    ("tensors", "binary", "words"),
    [
        ((("x", "FP64", [3], 24),), np.zeros(2).tobytes(), "exceeds the 16 bytes left"),  # truncated body
        (
            (("x", "FP64", [3], 16),),
            np.zeros(2).tobytes(),
            "16 bytes of binary data where shape [3] of FP64 needs 24",
        ),
        ((("x", "FP64", [2], 16),), np.zeros(3).tobytes(), "8 bytes of binary data belong to no input"),
        ((("x", "FP64", [2], -1),), b"", "binary_data_size -1 is not a size"),
        ((("x", "FP64", [2], None),), b"", "has neither `data` nor"),
        ((("c", "BYTES", [1], 3),), b"\x05\x00\x00", "cut off in its length prefix"),
        ((("c", "BYTES", [1], 6),), struct.pack("<I", 99) + b"ab", "says 99 bytes, 2 are left"),
        (
            (("c", "BYTES", [2], 7),),
            struct.pack("<I", 3) + b"abc",
            "1 BYTES elements where the shape holds 2",
        ),
        ((("c", "BYTES", [1], 6),), struct.pack("<I", 2) + b"\xff\xfe", "is not UTF-8 text"),
        ((("x", "FP64", [-1], 8),), np.zeros(1).tobytes(), "negative dimension"),
    ],
)
def test_bytes_that_lie_are_refused_naming_the_input(
    tensors: tuple[tuple[str, str, list[int], int | None], ...], binary: bytes, words: str
) -> None:
    with pytest.raises(ServiceError) as refused:
        attach_inputs(request_of(*tensors).inputs, binary)
    assert refused.value.status_code in (400, 422)
    assert words in str(refused.value.detail)
    if isinstance(refused.value, Unprocessable):
        assert refused.value.detail[0]["field"].startswith("inputs.")  # type: ignore[index]


@pytest.mark.parametrize("length", ["abc", "-1", "999999", ""])
def test_a_header_length_that_is_no_length_within_the_body_is_a_400(length: str) -> None:
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        split_body(b"{}", length)


def test_a_large_count_with_few_bytes_is_refused_before_anything_is_allocated() -> None:
    with pytest.raises(Unprocessable, match="needs 8000000000"):
        decode_tensor("x", "FP64", [10**9], b"\x00" * 8)


@pytest.mark.parametrize("datatype", sorted(NUMPY_TYPES))
def test_every_datatype_reads_as_numpy_reads_it(datatype: str) -> None:
    """The memoryview fast path gives the values numpy gives, for every numeric datatype."""
    raw = np.random.default_rng(0).integers(0, 256, size=64, dtype=np.uint8).tobytes()
    count = 64 // np.dtype(NUMPY_TYPES[datatype]).itemsize
    expected = np.frombuffer(raw, dtype=NUMPY_TYPES[datatype]).tolist()
    # as bytes, and as the slice of a larger body that attach_inputs hands it
    for data in (raw, memoryview(b"\x00" + raw)[1:]):
        got = decode_tensor("x", datatype, [count], data)
        assert [type(v) for v in got] == [type(v) for v in expected]
        assert np.array_equal(np.array(got), np.array(expected), equal_nan=datatype.startswith("FP"))


def test_inputs_of_every_kind_after_one_another_read_their_own_bytes() -> None:
    """The FP64 shortcut and the general decoder, mixed, each reading its slice in order."""
    request = request_of(
        ("a", "FP64", [2], 16), ("b", "FP64", [2, 1], 16), ("c", "FP32", [1], 4), ("d", "FP64", [0], 0)
    )
    body = np.array([1.0, 2.0, 3.0, 4.0]).tobytes() + np.array([5.5], dtype="<f4").tobytes()
    attach_inputs(request.inputs, body)
    assert [t.data for t in request.inputs] == [[1.0, 2.0], [3.0, 4.0], [5.5], []]
