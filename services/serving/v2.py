"""The Open Inference Protocol V2 REST API, so existing V2 clients (tritonclient, the KServe
SDK, MLServer's) work unchanged.

Tensor layout (docs/architecture.md, "Wire formats"): one input per feature, named after it,
shape `[N]`, `FP64` for numeric and `BYTES` for categorical features (MLServer's pandas-codec
convention), plus an optional `id` input (`BYTES`, `[N]`) carrying record ids for the label join. Outputs:
`predict` (`[N]`) and `predict_proba` (`[N, classes]`, in the schema's class order). The model
name is the schema's `name`; a `versions/{v}` path may name the champion or the challenger.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import time
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from services.serving.model import LoadedModel
from services.serving.prediction_log import ScoredRows
from services.serving.scoring import Scorer
from services.serving.v2_binary import HEADER, attach_inputs, encode_tensor, split_body
from shared.events import REASON_CHARS, excerpt
from shared.http import (
    BadRequest,
    BodyTooLarge,
    CompactJSONResponse,
    DirectRoute,
    NotFound,
    ServiceError,
    Unprocessable,
)
from shared.registry_api import VersionNumber


class Datatype(StrEnum):
    """The tensor data types of the protocol (as MLServer's `Datatype`)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


NUMERIC_TYPES = frozenset(Datatype) - {Datatype.BOOL, Datatype.BYTES}
"""What a numeric feature's tensor may be sent as (its values are read as floats)."""


# NOTE: the inference request is decoded and validated by msgspec, not pydantic: 20-tensor
# one-row requests took 20.3 µs in pydantic's model_validate_json and 4.3 µs in msgspec
# (in-process), and pydantic was 14.5% of the V2 JSON path's CPU under load (py-spy).
# Unknown fields are ignored, as in the pydantic models (the protocol lets clients add them).


class TensorIn(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any] | None = None
    """The values (nested or flat); absent when they come as binary data after the JSON
    (`parameters.binary_data_size`, services/serving/v2_binary.py)."""
    parameters: dict[str, Any] | None = None


class RequestedOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct):
    inputs: Annotated[list[TensorIn], msgspec.Meta(min_length=1)]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


_DECODER = msgspec.json.Decoder(InferenceRequest)
_PLACE = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse_request(header: bytes) -> InferenceRequest:
    """A V2 inference request's JSON: 400 when it is not JSON, 422 naming the field that does
    not fit the protocol."""
    try:
        return _DECODER.decode(header)
    except msgspec.ValidationError as exc:
        match = _PLACE.match(str(exc))
        assert match is not None  # the pattern matches any text
        path = (match["path"] or "").replace("[", ".").replace("]", "").lstrip(".")
        # msgspec quotes the value it refused: bounded, as every error that may quote input
        reason = excerpt(match["reason"], REASON_CHARS)
        raise Unprocessable([{"field": path or "<body>", "reason": reason}]) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deep") from None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


def _flatten(data: list[Any]) -> list[Any]:
    """`[N, 1]` data (`[[a], [b]]`) as `[N]`; one level only: a shape of `[N]` or `[N, 1]` nests
    no deeper, and a deeper list is left as a value, which validation refuses (no recursion
    on what a client nests)."""
    return [x for item in data for x in (item if type(item) is list else [item])]


def _label_type(model: LoadedModel) -> Datatype:
    return Datatype.INT64 if all(isinstance(c, int) for c in model.schema.label.classes) else Datatype.BYTES


def model_metadata(model: LoadedModel) -> ModelMetadata:
    inputs = [
        TensorMetadata(
            name=f.name, datatype=Datatype.FP64 if f.type == "numeric" else Datatype.BYTES, shape=[-1]
        )
        for f in model.schema.features
    ]
    return ModelMetadata(
        name=model.schema.name,
        versions=[str(model.number)],
        platform="ctloop-sklearn",
        inputs=[
            *inputs,
            TensorMetadata(name="id", datatype=Datatype.BYTES, shape=[-1], parameters={"optional": True}),
        ],
        outputs=[
            TensorMetadata(name="predict", datatype=_label_type(model), shape=[-1]),
            TensorMetadata(
                name="predict_proba", datatype=Datatype.FP64, shape=[-1, len(model.schema.label.classes)]
            ),
        ],
    )


def _rows(model: LoadedModel, request: InferenceRequest) -> list[tuple[object, object]]:
    """Columns of tensors -> (record id, features) rows; 422 naming the tensor and the reason."""
    errors: list[dict[str, object]] = []
    columns: dict[str, list[Any]] = {}
    # NOTE: looked up in the schema's dict: a list of names rebuilt per tensor made this
    # function 10% of the V2 JSON path's CPU (py-spy, 20 features, 64 connections).
    features = model.schema.features_by_name
    for tensor in request.inputs:
        name, shape, datatype = tensor.name, tensor.shape, tensor.datatype
        data = tensor.data or []
        spec = None if name == "id" else features.get(name)  # `id`: record ids
        # NOTE: the common case decided in one test (the type check in C, not a generator):
        # _rows 13.1 -> 9.9 µs per one-row, 20-tensor request in-process.
        if (
            spec is not None
            and datatype is Datatype.FP64
            and spec.type == "numeric"
            and len(shape) == 1
            and len(data) == shape[0]
            and list not in map(type, data)
        ):
            columns[name] = data
            continue
        values = _flatten(data) if list in map(type, data) else data
        if len(shape) != 1 and not (len(shape) == 2 and shape[1] == 1):
            errors.append({"field": f"inputs.{name}", "reason": f"shape {shape} must be [N]"})
        elif len(values) != shape[0]:
            errors.append({"field": f"inputs.{name}", "reason": f"{len(values)} values for shape {shape}"})
        elif name != "id" and spec is None:
            errors.append({"field": f"inputs.{name}", "reason": "is not a feature of the model"})
        # NOTE: identity first: hashing an enum member runs Python code. With it (and the
        # one-row path below) this function went 16.1 -> 10.5 µs per one-row, 20-tensor
        # request in-process; end to end the change is inside the benchmark's noise.
        elif spec is None or spec.type == "categorical":
            if datatype is not Datatype.BYTES:
                errors.append(_wrong_type(name, datatype, Datatype.BYTES))
            else:
                columns[name] = values
        elif datatype is Datatype.FP64 or datatype in NUMERIC_TYPES:
            columns[name] = values
        else:
            errors.append(_wrong_type(name, datatype, Datatype.FP64))
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        errors.append({"field": "inputs", "reason": f"inputs have different lengths {sorted(sizes)}"})
    if errors:
        raise Unprocessable(errors)
    count = sizes.pop() if sizes else 0
    ids = columns.pop("id", [None] * count)
    if count == 1:  # most requests: one row
        return [(ids[0], {name: values[0] for name, values in columns.items()})]
    return [(ids[i], {name: values[i] for name, values in columns.items()}) for i in range(count)]


def _wrong_type(name: str, datatype: Datatype, wanted: Datatype) -> dict[str, object]:
    return {"field": f"inputs.{name}", "reason": f"datatype {datatype} where {wanted} is expected"}


EXTENSIONS = ["binary_tensor_data"]
"""The protocol extensions served, named alike in HTTP's and gRPC's server metadata (as Triton
does; over gRPC, raw tensors are part of the protocol itself)."""


@functools.cache
def server_version() -> str:
    try:
        return importlib.metadata.version("ctloop")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def _binary_outputs(request: InferenceRequest, wanted: list[str]) -> set[str]:
    """The outputs to send as binary data: those requested with `binary_data`, or all when the
    request says `binary_data_output` (tritonclient's default when it names no outputs)."""
    if request.outputs:
        return {o.name for o in request.outputs if (o.parameters or {}).get("binary_data") is True}
    return set(wanted) if (request.parameters or {}).get("binary_data_output") is True else set()


def _error_response(exc: ServiceError) -> JSONResponse:
    """V2 clients read errors as `{"error": "..."}`: ctloop's errors are translated at this edge."""
    return JSONResponse({"error": error_text(exc)}, status_code=exc.status_code, headers=exc.headers)


def error_text(exc: ServiceError) -> str:
    """A ctloop error as one line of text: each field and its reason when there are several."""
    detail = exc.detail
    if isinstance(detail, list):
        return "; ".join(f"{d.get('field', '')}: {d.get('reason', '')}" for d in detail)
    return str(detail)


def loaded_model(scorer: Scorer, name: str, version: int | None, api: str) -> LoadedModel:
    """The champion, or the loaded `version`, of the model `name` (404 for another name)."""
    model = scorer.model(api, version)
    if name != model.schema.name:
        raise NotFound(f"no model named {name!r} (this server serves {model.schema.name!r})")
    return model


OUTPUTS = ("predict", "predict_proba")


Outputs = list[dict[str, Any]]
"""Output tensors as the wire formats write them: `name`, `shape`, `datatype` and flat `data`."""


async def infer_outputs(
    scorer: Scorer, name: str, version: int | None, request: InferenceRequest, api: str
) -> tuple[LoadedModel, Outputs]:
    """Score a V2 request with the model it names: the model and its output tensors, those the
    request asked for or all. The wire formats (JSON, binary, gRPC) only translate what goes in
    and out."""
    started = time.perf_counter()
    model, items = _model_and_items(scorer, name, version, request, api)
    ids, rows = await scorer.validated(model, items, api)
    scored = await scorer.score(model, ids, rows, api, started)
    return model, _outputs(model, scored, request)


def infer_outputs_blocking(
    scorer: Scorer, name: str, version: int | None, request: InferenceRequest, api: str
) -> tuple[LoadedModel, Outputs]:
    """`infer_outputs` from a worker thread (gRPC's), with no event loop on the way."""
    started = time.perf_counter()
    model, items = _model_and_items(scorer, name, version, request, api)
    ids, rows = scorer.rows_here(model, items, api)
    scored = scorer.score_blocking(model, ids, rows, api, started)
    return model, _outputs(model, scored, request)


def _model_and_items(
    scorer: Scorer, name: str, version: int | None, request: InferenceRequest, api: str
) -> tuple[LoadedModel, list[tuple[object, object]]]:
    """The model the request names and its (id, features) pairs, its outputs checked."""
    unknown = [o.name for o in request.outputs or [] if o.name not in OUTPUTS]
    if unknown:
        raise Unprocessable([{"field": f"outputs.{n}", "reason": "unknown output"} for n in unknown])
    model = loaded_model(scorer, name, version, api)
    return model, _rows(model, request)


def _outputs(model: LoadedModel, scored: ScoredRows, request: InferenceRequest) -> Outputs:
    """The scored rows as the output tensors the request asked for (all when it names none)."""
    keys = model.schema.class_keys
    label_type = _label_type(model)
    outputs = {
        "predict": {
            "name": "predict",
            "shape": [len(scored.rows)],
            "datatype": label_type,
            "data": scored.classes if label_type == Datatype.INT64 else [str(c) for c in scored.classes],
        },
        "predict_proba": {
            "name": "predict_proba",
            "shape": [len(scored.rows), len(keys)],
            "datatype": Datatype.FP64,
            "data": [p[k] for p in scored.probabilities for k in keys],
        },
    }
    wanted = [o.name for o in request.outputs] if request.outputs else list(OUTPUTS)
    return [outputs[n] for n in wanted]


def _v2_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ServiceError as exc:
            return _error_response(exc)

    return wrapper


INLINE_BODY_BYTES = 64 * 1024
"""Request bodies up to this are parsed on the event loop; larger ones (up to the body limit,
~100 ms for 16 MB) on a thread, so one large request does not stall every other."""


async def _request(http: Request) -> InferenceRequest:
    # NOTE: V2 clients (tritonclient) send JSON without a JSON content type: parse it ourselves.
    body = await http.body()
    header, binary = split_body(body, http.headers.get(HEADER))
    if len(header) <= INLINE_BODY_BYTES:
        request = parse_request(header)
    else:
        request = await run_in_threadpool(parse_request, header)
    attach_inputs(request.inputs, binary)
    return request


async def v2_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's request validation errors, in the protocol's `{"error": ...}` body on `/v2`
    paths (and FastAPI's own body elsewhere)."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith("/v2/"):
        return await request_validation_exception_handler(request, exc)
    reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
    return JSONResponse({"error": reasons}, status_code=422)


MODEL_NAME_PARAMETER = {
    "parameters": [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}}
    ]
}


def add_v2_routes(router: APIRouter, scorer: Scorer) -> None:
    """The protocol's routes, added to `router` (the app's own) under `/v2`.

    NOTE: added to the app's router rather than included as a router of their own: FastAPI
    (0.165) dispatches an included router's routes a second time, and that dispatch with the
    path parameter's resolution was ~15% of an in-process V2 JSON request (cProfile)."""
    errors: dict[int | str, dict[str, Any]] = {code: {"model": V2Error} for code in (400, 404, 413, 422, 503)}
    tags: list[str | Enum] = ["open inference protocol v2"]

    def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return router.get(
            f"/v2{path}", tags=tags, responses={**errors, **options.pop("responses", {})}, **options
        )

    def post(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return router.post(f"/v2{path}", tags=tags, responses=errors, **options)

    # NOTE: the inference routes before the metadata routes: routes are matched in order, and
    # they take nearly all the traffic (matching the metadata routes before them was ~3% of the
    # V2 path's CPU). The champion's is a `DirectRoute`, moved ahead of every route by the app.

    async def infer(name: str, version: int | None, request: InferenceRequest) -> Response:
        model, outputs = await infer_outputs(scorer, name, version, request, "v2")
        wanted = [o["name"] for o in outputs]
        # NOTE: plain JSON in InferenceResponse's shape; re-validating it cost more than the predict.
        response: dict[str, object] = {
            "model_name": model.schema.name,
            "model_version": str(model.number),
            "outputs": outputs,
        }
        if request.id is not None:
            response["id"] = request.id
        binary = _binary_outputs(request, wanted)
        if not binary:
            return CompactJSONResponse(response)
        chunks = []
        for output in response["outputs"]:  # type: ignore[attr-defined]
            if output["name"] in binary:
                raw = encode_tensor(output["datatype"], output.pop("data"))
                output["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
        head = msgspec.json.encode(response)
        return Response(
            b"".join([head, *chunks]),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(head))},
        )

    # NOTE: the model's name is read from the path by hand and documented in `openapi_extra`:
    # FastAPI's resolution of a declared path parameter cost ~8 µs per request (in-process).
    async def infer_champion(http: Request) -> Any:
        """Infer with the champion. The body is a V2 inference request (`inputs` tensors, optional
        `outputs`), read whatever its content type."""
        return await _infer_async(http.path_params["name"], None, http)

    # the route that takes nearly all the traffic: answered directly (`DirectRoute`)
    router.add_api_route(
        "/v2/models/{name}/infer",
        infer_champion,
        methods=["POST"],
        tags=tags,
        responses=errors,
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        openapi_extra=MODEL_NAME_PARAMETER,
        route_class_override=DirectRoute,
    )

    @post(
        "/models/{name}/versions/{version}/infer",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
    )
    async def infer_version(name: str, version: VersionNumber, http: Request) -> Any:
        """Infer with a loaded version (the champion's or the challenger's number)."""
        return await _infer_async(name, version, http)

    async def _infer_async(name: str, version: int | None, http: Request) -> Any:
        try:
            return await infer(name, version, await _request(http))
        except ServiceError as exc:
            return _error_response(exc)
        except BodyTooLarge as exc:  # the body limit, met while the body was read
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @get("", response_model=ServerMetadata)
    def server_metadata() -> ServerMetadata:
        """The server's name, version and the protocol extensions it supports."""
        return ServerMetadata(name="ctloop", version=server_version(), extensions=EXTENSIONS)

    @get("/health/live", response_model=ServerLive)
    def live() -> ServerLive:
        return ServerLive(live=True)

    @get("/health/ready", response_model=ServerReady, responses={503: {"model": ServerReady}})
    def ready() -> JSONResponse:
        is_ready = scorer.holder.current is not None
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    def loaded(name: str, version: int | None) -> LoadedModel:
        return loaded_model(scorer, name, version, "v2")

    @get("/models/{name}", response_model=ModelMetadata)
    @_v2_errors
    def metadata(name: str) -> ModelMetadata:
        return model_metadata(loaded(name, None))

    @get("/models/{name}/versions/{version}", response_model=ModelMetadata)
    @_v2_errors
    def version_metadata(name: str, version: VersionNumber) -> ModelMetadata:
        return model_metadata(loaded(name, version))

    @get("/models/{name}/ready", response_model=ModelReady)
    @_v2_errors
    def model_ready(name: str) -> ModelReady:
        return ModelReady(name=loaded(name, None).schema.name, ready=True)

    @get("/models/{name}/versions/{version}/ready", response_model=ModelReady)
    @_v2_errors
    def version_ready(name: str, version: VersionNumber) -> ModelReady:
        return ModelReady(name=name, ready=loaded(name, version).number == version)
