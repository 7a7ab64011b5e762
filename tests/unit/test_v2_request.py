"""The V2 inference request's decoder: a request that fits the protocol is read as sent, and
every way it can fail to is a 400 (not JSON) or a 422 naming the field, never another error."""

from __future__ import annotations

import pytest

from services.serving.v2 import Datatype, parse_request
from shared.http import BadRequest, Unprocessable

TENSOR = b'{"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.5]}'


def test_a_request_is_read_as_sent_and_unknown_fields_are_ignored() -> None:
    request = parse_request(
        b'{"id": "r-1", "inputs": [' + TENSOR + b'], "outputs": [{"name": "predict"}], "extra": {"a": 1}}'
    )
    assert request.id == "r-1"
    assert [(t.name, t.shape, t.datatype, t.data) for t in request.inputs] == [
        ("x1", [1], Datatype.FP64, [0.5])
    ]
    assert request.inputs[0].datatype is Datatype.FP64
    assert [o.name for o in request.outputs or []] == ["predict"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"inputs": []}', "inputs", "length >= 1"),
        (b'{"outputs": []}', "<body>", "missing required field `inputs`"),
        (b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP65"}]}', "inputs.0.datatype", "FP65"),
        (b'{"inputs": [{"name": "x1", "shape": ["1"], "datatype": "FP64"}]}', "inputs.0.shape.0", "int"),
        (b'{"inputs": [' + TENSOR + b', {"shape": [1], "datatype": "FP64"}]}', "inputs.1", "`name`"),
        (
            b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": [1'
            + b"0" * 5_000
            + b"]}]}",
            "inputs.0.data.0",
            "out of range",
        ),
        (b"[1, 2]", "<body>", "object"),
    ],
)
def test_a_request_that_does_not_fit_names_the_field(body: bytes, field: str, words: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        parse_request(body)
    [error] = refused.value.detail
    assert error["field"] == field and words in error["reason"], error


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"inputs": [',
        b'{"inputs": [' + TENSOR + b"]} trailing",
        b"\xff\xfe",
        b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}]}",
    ],
)
def test_what_is_not_json_is_a_400(body: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(body)
    assert "malformed JSON" in str(refused.value.detail)


def test_a_refused_value_is_quoted_only_in_part() -> None:
    """msgspec quotes the value it refuses: a 100 kB datatype does not come back whole."""
    body = b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "' + b"A" * 100_000 + b'"}]}'
    with pytest.raises(Unprocessable) as refused:
        parse_request(body)
    [error] = refused.value.detail
    assert error["field"] == "inputs.0.datatype" and len(error["reason"]) < 600, len(error["reason"])
