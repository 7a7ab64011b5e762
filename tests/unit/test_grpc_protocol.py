"""The gRPC protocol module: generated from its .proto as checked in, wire-compatible with the
protocol that tritonclient speaks, and requests decoded with the HTTP API's errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor

from services.serving.grpc_server import METHODS, parse, request_from_message
from services.serving.protocol import inference_pb2 as pb
from services.serving.v2_binary import encode_tensor
from shared.http import ServiceError

ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("services/serving/protocol/inference.proto")


def test_the_checked_in_module_is_what_make_proto_generates(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(PROTO),
        ],
        cwd=ROOT,
        check=True,
    )
    generated = tmp_path / PROTO.parent
    subprocess.run(
        [Path(sys.executable).parent / "ruff", "format", "--quiet", generated / "inference_pb2.pyi"],
        check=True,
    )
    for name in ("inference_pb2.py", "inference_pb2.pyi"):
        assert (generated / name).read_text() == (ROOT / PROTO.parent / name).read_text(), (
            f"run `make proto`: {name} is stale"
        )


def _fields(descriptor: Descriptor) -> dict[str, object]:
    fields: dict[str, object] = {f.name: (f.number, f.type, f.is_repeated) for f in descriptor.fields}
    for nested in descriptor.nested_types:
        fields[nested.name] = _fields(nested)
    return fields


@pytest.mark.parametrize("message", sorted(pb.DESCRIPTOR.message_types_by_name))
def test_every_message_has_the_field_numbers_and_types_tritonclient_puts_on_the_wire(message: str) -> None:
    from tritonclient.grpc import service_pb2 as triton  # Triton's protocol: a superset of KServe's

    ours = _fields(getattr(pb, message).DESCRIPTOR)
    theirs = _fields(getattr(triton, message).DESCRIPTOR)
    assert {k: theirs[k] for k in ours} == ours


def _request(
    *inputs: pb.ModelInferRequest.InferInputTensor, raw: list[bytes] | None = None
) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="demo", inputs=inputs, raw_input_contents=raw or [])


def test_typed_contents_and_raw_contents_decode_to_the_same_request() -> None:
    typed = _request(
        pb.ModelInferRequest.InferInputTensor(
            name="x1", datatype="FP64", shape=[2], contents=pb.InferTensorContents(fp64_contents=[1.5, -2.0])
        ),
        pb.ModelInferRequest.InferInputTensor(
            name="color",
            datatype="BYTES",
            shape=[2],
            contents=pb.InferTensorContents(bytes_contents=[b"red", b"blue"]),
        ),
    )
    raw = _request(
        pb.ModelInferRequest.InferInputTensor(name="x1", datatype="FP64", shape=[2]),
        pb.ModelInferRequest.InferInputTensor(name="color", datatype="BYTES", shape=[2]),
        raw=[np.array([1.5, -2.0]).tobytes(), encode_tensor("BYTES", ["red", "blue"])],
    )
    for message in (typed, raw):
        request = request_from_message(message)
        assert [(t.name, t.shape, t.data) for t in request.inputs] == [
            ("x1", [2], [1.5, -2.0]),
            ("color", [2], ["red", "blue"]),
        ]


X1 = pb.ModelInferRequest.InferInputTensor(name="x1", datatype="FP64", shape=[2])


@pytest.mark.parametrize(
    ("message", "status", "error"),
    [
        (_request(), 422, "inputs: must hold at least one input tensor"),
        (_request(X1, X1, raw=[b"\x00" * 16]), 400, "1 raw_input_contents for 2 inputs: one per input"),
        (
            _request(X1, raw=[b"\x00" * 9]),
            422,
            "inputs.x1: 9 bytes of binary data where shape [2] of FP64 needs 16",
        ),
        (
            _request(pb.ModelInferRequest.InferInputTensor(name="x1", datatype="FLOAT", shape=[1])),
            422,
            "inputs.x1: unknown datatype 'FLOAT'",
        ),
        (
            _request(pb.ModelInferRequest.InferInputTensor(name="x1", datatype="FP16", shape=[1])),
            422,
            "inputs.x1: datatype FP16 must be sent in raw_input_contents",
        ),
        (
            _request(
                pb.ModelInferRequest.InferInputTensor(
                    name="color",
                    datatype="BYTES",
                    shape=[1],
                    contents=pb.InferTensorContents(bytes_contents=[b"\xff"]),
                )
            ),
            422,
            "inputs.color: a BYTES element is not UTF-8 text",
        ),
        (
            _request(
                pb.ModelInferRequest.InferInputTensor(name="color", datatype="BYTES", shape=[1]),
                raw=[b"\x09\x00\x00\x00ab"],
            ),
            422,
            "inputs.color: BYTES element 0 says 9 bytes, 2 are left",
        ),
    ],
)
def test_a_request_that_does_not_hold_what_it_says_is_refused_naming_the_input(
    message: pb.ModelInferRequest, status: int, error: str
) -> None:
    with pytest.raises(ServiceError) as refused:
        request_from_message(message)
    detail = refused.value.detail
    text = "; ".join(f"{d['field']}: {d['reason']}" for d in detail) if isinstance(detail, list) else detail
    assert (refused.value.status_code, text) == (status, error)


def test_a_grpc_port_already_taken_fails_the_task_naming_the_address() -> None:
    """The supervisor restarts a failed task and `/healthz` names it as down meanwhile."""
    import socket

    from services.serving.grpc_server import GrpcServer
    from shared.settings import ServingSettings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = GrpcServer(None, ServingSettings(serving_grpc_port=port, dev_mode=True))  # type: ignore[arg-type]
        with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            server.run()


def test_bytes_that_are_no_message_are_a_400_not_grpcs_internal_error() -> None:
    with pytest.raises(ServiceError) as refused:
        parse(METHODS["ModelInfer"], b"\xff\xff\xff")
    assert refused.value.status_code == 400 and "not a valid ModelInferRequest" in str(refused.value.detail)
