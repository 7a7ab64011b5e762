"""Serving's gRPC API: the Open Inference Protocol V2 over gRPC (`inference.GRPCInferenceService`,
services/serving/protocol/inference.proto) on its own port (`CTLOOP_SERVING_GRPC_PORT`), for
tritonclient.grpc and the other V2 gRPC clients.

The same scorer as the HTTP APIs answers it (model holder, micro-batcher, prediction log,
shadow), through services/serving/v2.py's `infer_outputs_blocking`: this module only translates
protobuf messages. Inputs come as typed `contents` or as `raw_input_contents` (one entry per
input, as the binary extension lays them out); the answer uses the form the request used.
Errors carry the HTTP API's text with the matching status code (INVALID_ARGUMENT for what
HTTP answers 4xx, NOT_FOUND, UNAVAILABLE with no model yet).

The standard health service (`grpc.health.v1.Health`, from grpcio-health-checking) answers
beside it, for Kubernetes' gRPC probes, grpc_health_probe and load balancers: SERVING for ""
and for the inference service while a model is loaded, NOT_SERVING before the first one and
while the server shuts down; `Watch` streams each change (checked every
`HEALTH_POLL_S`).

grpcio's server runs each call on one of `CTLOOP_SERVING_GRPC_WORKERS` threads, which waits
for the micro-batcher itself, with no event loop on the way. The server is a supervised task:
a port that cannot be bound shows in `/healthz` as a task that keeps restarting, like any
failed background task.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.serving.protocol import inference_pb2 as pb
from services.serving.scoring import Scorer
from services.serving.v2 import (
    EXTENSIONS,
    Datatype,
    InferenceRequest,
    RequestedOutput,
    TensorIn,
    error_text,
    infer_outputs_blocking,
    loaded_model,
    model_metadata,
    server_version,
)
from services.serving.v2_binary import decode_tensor, encode_tensor
from shared.http import BadRequest, ServiceError, Unprocessable
from shared.settings import ServingSettings

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

SERVICE = "inference.GRPCInferenceService"
HEALTH_POLL_S = 0.5
"""How often the health service's status is brought up to date with the model holder."""
API = "grpc"

CONTENTS_FIELD = {
    Datatype.BOOL: "bool_contents",
    Datatype.INT8: "int_contents",
    Datatype.INT16: "int_contents",
    Datatype.INT32: "int_contents",
    Datatype.INT64: "int64_contents",
    Datatype.UINT8: "uint_contents",
    Datatype.UINT16: "uint_contents",
    Datatype.UINT32: "uint_contents",
    Datatype.UINT64: "uint64_contents",
    Datatype.FP32: "fp32_contents",
    Datatype.FP64: "fp64_contents",
    Datatype.BYTES: "bytes_contents",
}
"""Where `InferTensorContents` holds each datatype (FP16 has no field: it must be sent raw)."""


DATATYPES = {datatype.value: datatype for datatype in Datatype}
"""Each datatype by its name on the wire."""


def _status(exc: ServiceError) -> grpc.StatusCode:
    if exc.status_code == 404:
        return grpc.StatusCode.NOT_FOUND
    if exc.status_code == 503:
        return grpc.StatusCode.UNAVAILABLE
    if exc.status_code < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _invalid(field: str, reason: str) -> Unprocessable:
    return Unprocessable([{"field": field, "reason": reason}])


def _version(text: str) -> int | None:
    """The `model_version` field: empty for the champion, else a version number."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1 or len(text) > 18:
        raise _invalid("model_version", f"{text[:40]!r} is not a version number")
    return int(text)


def _contents(tensor: pb.ModelInferRequest.InferInputTensor, datatype: Datatype) -> list[Any]:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise _invalid(f"inputs.{tensor.name}", f"datatype {datatype} must be sent in raw_input_contents")
    values = list(getattr(tensor.contents, field))
    if datatype != Datatype.BYTES:
        return values
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        raise _invalid(f"inputs.{tensor.name}", "a BYTES element is not UTF-8 text") from None


def request_from_message(message: pb.ModelInferRequest) -> InferenceRequest:
    """A `ModelInferRequest` as the HTTP API's request, its tensors decoded (422 naming the input
    whose data does not match its datatype and shape)."""
    if not message.inputs:
        raise _invalid("inputs", "must hold at least one input tensor")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs: one per input")
    inputs = []
    # NOTE: each field read once, the datatype from a dict rather than the enum's call:
    # 38-43 -> 29 µs per 20-tensor request in-process (protobuf builds a new object per read).
    for index, tensor in enumerate(message.inputs):
        name, text = tensor.name, tensor.datatype
        datatype = DATATYPES.get(text)
        if datatype is None:
            raise _invalid(f"inputs.{name}", f"unknown datatype {text[:40]!r}")
        shape = list(tensor.shape)
        data = decode_tensor(name, datatype, shape, raw[index]) if raw else _contents(tensor, datatype)
        # built as it is: protobuf already typed every field
        inputs.append(TensorIn(name=name, shape=shape, datatype=datatype, data=data))
    outputs = [RequestedOutput(name=o.name) for o in message.outputs]
    return InferenceRequest(id=message.id or None, inputs=inputs, outputs=outputs or None)


def _fill(tensor: pb.ModelInferResponse.InferOutputTensor, output: dict[str, Any]) -> None:
    datatype = output["datatype"]
    data = output["data"]
    if datatype == Datatype.BYTES:
        data = [str(v).encode() for v in data]
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(data)


class InferenceService:
    """The protocol's six methods, each from a request message to a response, run on the gRPC
    worker thread that took the call."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.scorer.holder.current is not None)

    def ServerMetadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="ctloop", version=server_version(), extensions=EXTENSIONS)

    def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        # As Triton: a model that is not loaded (or not there yet) is "not ready", not an error.
        try:
            version = _version(request.version)
            model = loaded_model(self.scorer, request.name, version, API)
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=version is None or model.number == version)

    def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        metadata = model_metadata(loaded_model(self.scorer, request.name, _version(request.version), API))
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=metadata.versions,
            platform=metadata.platform,
            inputs=[{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in metadata.inputs],
            outputs=[{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in metadata.outputs],
        )

    def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        version = _version(request.model_version)
        model, outputs = infer_outputs_blocking(
            self.scorer, request.model_name, version, request_from_message(request), API
        )
        response = pb.ModelInferResponse(
            model_name=model.schema.name, model_version=str(model.number), id=request.id
        )
        raw = bool(request.raw_input_contents)  # answer in the form that was asked in
        for output in outputs:
            tensor = response.outputs.add(
                name=output["name"], datatype=output["datatype"], shape=output["shape"]
            )
            if raw:
                response.raw_output_contents.append(encode_tensor(output["datatype"], output["data"]))
            else:
                _fill(tensor, output)
        return response


METHODS: dict[str, type[Message]] = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelInfer": pb.ModelInferRequest,
}
"""Each method's request message."""


def parse(message_type: type[M], data: bytes) -> M:
    """The request's bytes as its message; 400 when they are not one."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise BadRequest(f"the request is not a valid {message_type.DESCRIPTOR.name}: {exc}") from None


def _unary(
    method: Callable[[Any], Message], message_type: type[Message]
) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    """A method from the request's bytes to the response's; a ctloop error ends the call with
    its status code and text."""

    def call(data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = parse(message_type, data)
            return method(request).SerializeToString()
        except ServiceError as exc:
            context.abort(_status(exc), error_text(exc))

    return call


def handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """The service's methods under the protocol's names. Messages are parsed in the method, not
    by grpcio (whose parse failure ends a call as INTERNAL), and the generated stubs are not
    used: the messages are all this process needs from the .proto."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(_unary(getattr(service, name), request))
            for name, request in METHODS.items()
        },
    )


class GrpcServer:
    """A supervised worker (`shared.supervision`) that serves the gRPC API until stopped."""

    name = "grpc-server"

    def __init__(self, scorer: Scorer, settings: ServingSettings) -> None:
        self.service = InferenceService(scorer)
        self.address = f"{settings.host}:{settings.serving_grpc_port}"
        self.workers = settings.serving_grpc_workers
        self.max_message_bytes = settings.serving_max_body_bytes
        self._stopping = threading.Event()

    def run(self) -> None:
        # NOTE: grpcio's synchronous server with a thread per call in flight, not grpc.aio:
        # beside serving's busy threads (micro-batcher, Kafka producer) grpc.aio's hand-offs
        # from its poller wait on the GIL, measured 186 req/s at 64 calls in flight against
        # 508 req/s for this server (64 workers; 443 with 32, 310 with 8), same process.
        server = grpc.server(
            futures.ThreadPoolExecutor(self.workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0),  # a port already taken is an error, not a shared port
            ],
        )
        server.add_generic_rpc_handlers((handler(self.service),))
        checks = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:
            server.stop(None)  # its completion queue and poller, before the supervisor retries
            raise OSError(f"cannot listen for gRPC on {self.address}: {exc}") from None
        server.start()
        log.info("gRPC (Open Inference Protocol V2) on %s", self.address)
        serving: bool | None = None
        try:
            while True:
                now = self.service.scorer.holder.current is not None
                if now != serving:
                    serving = now
                    status = (
                        health_pb2.HealthCheckResponse.SERVING
                        if now
                        else health_pb2.HealthCheckResponse.NOT_SERVING
                    )
                    for name in ("", SERVICE):
                        checks.set(name, status)
                if self._stopping.wait(HEALTH_POLL_S):
                    break
        finally:
            checks.enter_graceful_shutdown()  # NOT_SERVING everywhere: balancers drain first
            server.stop(grace=2.0).wait()

    def stop(self) -> None:
        self._stopping.set()
