"""Serving against real registry and serving processes: a hot swap under concurrent load with
no failed request on any path (`/v1`, V2 JSON, V2 binary, gRPC), existing V2 clients with their
defaults (tritonclient HTTP and gRPC), a corrupted artifact refused while the old model keeps
serving, a too-slow model refused before it takes traffic, and a restart while the registry is
down (the cached model serves)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.events import Envelope
from tests.fixtures import demo_schema
from tests.integration.conftest import read_topic, start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration

GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("serving")
    running = start_stack(folder, services=("registry", "serving"))
    running.folder = folder  # type: ignore[attr-defined]
    yield running
    stop_stack(running)


def upload(stack: Stack, seed: int, passed: bool = True) -> dict:
    return upload_demo(stack, seed=seed, rows=300, passed=passed)


def served_version(stack: Stack) -> int | None:
    try:
        return httpx.get(f"{stack.url('serving')}/healthz", timeout=5).json().get("model_version")
    except httpx.HTTPError:
        return None


def _tensors(module: Any, rows: list[dict[str, Any]]) -> list[Any]:
    """The rows as V2 input tensors of tritonclient's `module` (http or grpc), set with its
    defaults (binary data)."""
    import numpy as np

    inputs = []
    for spec in demo_schema().features:
        numeric = spec.type == "numeric"
        tensor = module.InferInput(spec.name, [len(rows)], "FP64" if numeric else "BYTES")
        tensor.set_data_from_numpy(
            np.array([r[spec.name] for r in rows], dtype=np.float64 if numeric else object)
        )
        inputs.append(tensor)
    return inputs


ROWS = [GOOD, {**GOOD, "x1": -1.0}]


def _v1(stack: Stack) -> Callable[[], int]:
    http = httpx.Client(timeout=30)

    def call() -> int:
        body = http.post(
            f"{stack.url('serving')}/v1/predict", json={"records": [{"features": r} for r in ROWS]}
        )
        body.raise_for_status()
        answer = body.json()
        # one version computed the whole response
        assert {p["model_version"] for p in answer["predictions"]} == {answer["model_version"]}
        return int(answer["model_version"])

    return call


def _v2_json(stack: Stack) -> Callable[[], int]:
    http = httpx.Client(timeout=30)
    body = {
        "inputs": [
            {
                "name": s.name,
                "shape": [len(ROWS)],
                "datatype": "FP64" if s.type == "numeric" else "BYTES",
                "data": [r[s.name] for r in ROWS],
            }
            for s in demo_schema().features
        ]
    }

    def call() -> int:
        answer = http.post(f"{stack.url('serving')}/v2/models/demo/infer", json=body)
        answer.raise_for_status()
        assert len(answer.json()["outputs"][0]["data"]) == len(ROWS)
        return int(answer.json()["model_version"])

    return call


def _v2_binary(stack: Stack) -> Callable[[], int]:
    import tritonclient.http as v2

    client = v2.InferenceServerClient(url=stack.url("serving").removeprefix("http://"), network_timeout=30)
    inputs = _tensors(v2, ROWS)

    def call() -> int:
        result = client.infer("demo", inputs)
        assert result.as_numpy("predict").shape == (len(ROWS),)
        return int(result.get_response()["model_version"])

    return call


def _grpc(stack: Stack) -> Callable[[], int]:
    import tritonclient.grpc as v2

    client = v2.InferenceServerClient(stack.grpc_target)
    inputs = _tensors(v2, ROWS)

    def call() -> int:
        result = client.infer("demo", inputs, client_timeout=30)
        assert result.as_numpy("predict").shape == (len(ROWS),)
        return int(result.get_response().model_version)

    return call


PATHS = {"v1": _v1, "v2-json": _v2_json, "v2-binary": _v2_binary, "grpc": _grpc}
"""Each prediction path, as its usual client calls it: a function returning one call."""


def test_hot_swap_under_load_fails_no_request_on_any_path(stack: Stack) -> None:
    """Clients on all four paths (`/v1`, V2 JSON, V2 binary with tritonclient's defaults, gRPC
    with tritonclient.grpc's) keep calling while a new champion swaps in: none fails, and
    each path sees the new version."""
    first = upload(stack, seed=1)["version"]
    wait_for(lambda: served_version(stack) == first, "serving to load v1", 120)
    stop = threading.Event()
    failures: list[str] = []
    seen: dict[str, list[int]] = {path: [] for path in PATHS}

    def client(path: str) -> None:
        call = PATHS[path](stack)
        deadline = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                seen[path].append(call())
            except Exception as exc:
                failures.append(f"{path}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(path,)) for path in PATHS]
    for t in threads:
        t.start()
    wait_for(lambda: all(len(s) > 20 for s in seen.values()) or failures, "load on every path", 90)
    second = upload(stack, seed=2)["version"]
    wait_for(
        lambda: failures or all(len([v for v in s if v == second]) > 20 for s in seen.values()),
        "responses from v2 under load on every path",
        150,
    )
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    for versions in seen.values():
        assert set(versions) == {first, second}
        assert versions.index(second) > 0 and all(v == second for v in versions[versions.index(second) :])


def test_corrupted_artifact_is_refused_and_the_old_model_keeps_serving(stack: Stack) -> None:
    before = served_version(stack)
    candidate = upload(stack, seed=3, passed=False)  # registered, not promoted
    digest = candidate["digest"][len("sha256:") :]
    path = stack.folder / "registry" / "artifacts" / digest[:2] / digest  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-3] + b"bad")
    promoted = httpx.post(  # into staging, and from there on into production (rule auto)
        f"{stack.url('registry')}/v1/models/demo/versions/{candidate['version']}/promote",
        json={"environment": "staging"},
        headers={"Authorization": f"Bearer {stack.token('operator')}"},
    )
    assert promoted.status_code == 200
    events = read_topic(
        stack.bootstrap,
        topics.MODELS,
        lambda ev: any(
            e.type == "model.swap_failed" and e.payload["version"] == candidate["version"] for e in ev
        ),
    )
    refusal = next(e for e in events if e.type == "model.swap_failed")
    assert "digest" in refusal.payload["reason"]
    assert served_version(stack) == before
    answer = httpx.post(f"{stack.url('serving')}/v1/predict", json={"features": GOOD})
    assert answer.status_code == 200 and answer.json()["model_version"] == before


def test_open_inference_protocol_v2_with_tritonclient(stack: Stack) -> None:
    import numpy as np
    import tritonclient.http as v2
    from tritonclient.utils import InferenceServerException

    client = v2.InferenceServerClient(url=stack.url("serving").removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("demo")
    metadata = client.get_model_metadata("demo")
    assert [i["name"] for i in metadata["inputs"]][:5] == ["x1", "x2", "x3", "amount", "color"]
    rows = [GOOD, {**GOOD, "x1": -2.0, "color": "blue"}, {**GOOD, "x1": 1.5, "amount": 0.0}]
    inputs = []
    for spec in demo_schema().features:
        numeric = spec.type == "numeric"
        tensor = v2.InferInput(spec.name, [len(rows)], "FP64" if numeric else "BYTES")
        tensor.set_data_from_numpy(
            np.array([r[spec.name] for r in rows], dtype=np.float64 if numeric else object), binary_data=False
        )
        inputs.append(tensor)
    ids = v2.InferInput("id", [len(rows)], "BYTES")
    ids.set_data_from_numpy(np.array(["v2-a", "v2-b", "v2-c"], dtype=object), binary_data=False)
    outputs = [
        v2.InferRequestedOutput("predict", binary_data=False),
        v2.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    result = client.infer("demo", [*inputs, ids], outputs=outputs)
    version = served_version(stack)
    assert result.get_response()["model_version"] == str(version)
    predicted, proba = result.as_numpy("predict"), result.as_numpy("predict_proba")
    assert predicted.shape == (3,) and proba.shape == (3, 2)

    v1 = httpx.post(
        f"{stack.url('serving')}/v1/predict", json={"records": [{"features": r} for r in rows]}
    ).json()
    assert predicted.tolist() == [p["prediction"] for p in v1["predictions"]]
    assert np.allclose(proba, [[p["probabilities"]["0"], p["probabilities"]["1"]] for p in v1["predictions"]])

    bad = v2.InferInput("amount", [1], "FP64")
    bad.set_data_from_numpy(np.array([-5.0]), binary_data=False)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("demo", [*inputs[:3], bad, inputs[4]])
    assert "422" in str(refused.value.status()) or "amount" in str(refused.value)
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")
    client.close()


def test_tritonclient_with_its_defaults_uses_binary_tensors_both_ways(stack: Stack) -> None:
    """tritonclient's defaults: `set_data_from_numpy` packs binary data, no outputs named asks
    for all of them as binary, `InferRequestedOutput` asks for binary too."""
    import tritonclient.http as v2

    client = v2.InferenceServerClient(url=stack.url("serving").removeprefix("http://"))
    server = client.get_server_metadata()
    assert server["name"] == "ctloop" and "binary_tensor_data" in server["extensions"]
    rows = [GOOD, {**GOOD, "x1": -2.0, "color": "blue"}]
    inputs = _tensors(v2, rows)
    v1 = httpx.post(
        f"{stack.url('serving')}/v1/predict", json={"records": [{"features": r} for r in rows]}
    ).json()
    expected = [p["prediction"] for p in v1["predictions"]]
    everything = client.infer("demo", inputs)  # no outputs named: all of them, binary
    assert everything.as_numpy("predict").tolist() == expected
    assert everything.as_numpy("predict_proba").shape == (2, 2)
    assert everything.get_output("predict")["parameters"]["binary_data_size"] == 16
    one = client.infer("demo", inputs, outputs=[v2.InferRequestedOutput("predict")])
    assert one.as_numpy("predict").tolist() == expected and one.as_numpy("predict_proba") is None
    client.close()

    # a plain JSON body from httpx, the protocol's other form, answers the same
    body = {
        "inputs": [
            {
                "name": s.name,
                "shape": [2],
                "datatype": "FP64" if s.type == "numeric" else "BYTES",
                "data": [r[s.name] for r in rows],
            }
            for s in demo_schema().features
        ]
    }
    plain = httpx.post(f"{stack.url('serving')}/v2/models/demo/infer", json=body).json()
    assert plain["outputs"][0]["data"] == expected

    # binary data that lies about its size: a 422 naming the input, and serving goes on
    header = json.dumps(
        {"inputs": [{"name": "x1", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    cut = httpx.post(
        f"{stack.url('serving')}/v2/models/demo/infer",
        content=header + b"\x00" * 9,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert cut.status_code == 422 and "inputs.x1" in cut.json()["error"], cut.text
    assert httpx.get(f"{stack.url('serving')}/v2/health/live").json() == {"live": True}


def test_grpc_with_tritonclient_defaults_and_with_typed_contents(stack: Stack) -> None:
    """The gRPC API as tritonclient.grpc calls it (raw tensors both ways), and as a client that
    sends typed `contents` (answered in `contents`); errors carry the HTTP API's text."""
    import grpc
    import tritonclient.grpc as v2
    from tritonclient.utils import InferenceServerException

    from services.serving.protocol import inference_pb2 as pb

    version = served_version(stack)
    client = v2.InferenceServerClient(stack.grpc_target)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("demo") and client.is_model_ready("demo", str(version))
    assert not client.is_model_ready("demo", "999") and not client.is_model_ready("other")
    assert client.get_server_metadata().name == "ctloop"
    metadata = client.get_model_metadata("demo")
    assert metadata.versions == [str(version)]
    assert [(t.name, t.datatype) for t in metadata.inputs][:5] == [
        ("x1", "FP64"),
        ("x2", "FP64"),
        ("x3", "FP64"),
        ("amount", "FP64"),
        ("color", "BYTES"),
    ]
    rows = [GOOD, {**GOOD, "x1": -2.0, "color": "blue"}, {**GOOD, "x1": 1.5, "amount": 0.0}]
    v1 = httpx.post(
        f"{stack.url('serving')}/v1/predict", json={"records": [{"features": r} for r in rows]}
    ).json()
    expected = [p["prediction"] for p in v1["predictions"]]
    result = client.infer("demo", _tensors(v2, rows))
    assert result.get_response().model_version == str(version)
    assert result.as_numpy("predict").tolist() == expected
    assert result.as_numpy("predict_proba")[:, 1].tolist() == pytest.approx(
        [p["probabilities"]["1"] for p in v1["predictions"]]
    )
    named = client.infer("demo", _tensors(v2, rows), model_version=str(version), request_id="req-7")
    assert named.get_response().id == "req-7"

    bad = _tensors(v2, [{**GOOD, "amount": -5.0}] * 3)
    for tensors, kwargs, code, text in [
        (bad, {}, "INVALID_ARGUMENT", "amount"),
        (_tensors(v2, rows), {"model_name": "nope"}, "NOT_FOUND", "no model named 'nope'"),
        (_tensors(v2, rows), {"model_version": "999"}, "NOT_FOUND", "version 999 is not loaded"),
        (_tensors(v2, rows)[:4], {}, "INVALID_ARGUMENT", "color"),
    ]:
        with pytest.raises(InferenceServerException) as refused:
            client.infer(**{"model_name": "demo", "inputs": tensors, **kwargs})
        assert refused.value.status() == f"StatusCode.{code}" and text in refused.value.message(), (
            refused.value
        )
    client.close()

    # typed contents in, typed contents out, through a bare channel and ctloop's messages
    with grpc.insecure_channel(stack.grpc_target) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        request = pb.ModelInferRequest(model_name="demo")
        for spec in demo_schema().features:
            values = [r[spec.name] for r in rows]
            contents = (
                pb.InferTensorContents(fp64_contents=values)
                if spec.type == "numeric"
                else pb.InferTensorContents(bytes_contents=[v.encode() for v in values])
            )
            request.inputs.add(
                name=spec.name,
                datatype="FP64" if spec.type == "numeric" else "BYTES",
                shape=[3],
                contents=contents,
            )
        answer = infer(request, timeout=30)
        assert not answer.raw_output_contents
        assert list(answer.outputs[0].contents.int64_contents) == expected
        assert len(answer.outputs[1].contents.fp64_contents) == 6


def test_a_new_champion_much_slower_than_the_current_one_is_refused_before_it_takes_traffic(
    stack: Stack,
) -> None:
    """The performance check on serving's machine: a 300-tree forest (~10x the per-row time
    of the logistic regression serving now) is refused and the old model keeps answering,
    with the figures in `model.swap_failed`; a model as fast as the current one passes, with
    its figures in `model.swapped`."""
    before = served_version(stack)
    assert before is not None
    for _ in range(10):  # recent real rows for the check
        httpx.post(f"{stack.url('serving')}/v1/predict", json={"records": [{"features": GOOD}] * 4})
    slow = upload_demo(
        stack,
        seed=41,
        rows=300,
        estimator="sklearn.ensemble.RandomForestClassifier",
        params={"n_estimators": 300, "random_state": 0},
    )

    def report_of(version: int) -> Callable[[list[Envelope]], bool]:
        return lambda es: any(
            e.type in ("model.swap_failed", "model.swapped") and e.payload["version"] == version for e in es
        )

    events = read_topic(stack.bootstrap, topics.MODELS, report_of(slow["version"]), timeout_s=120)
    refused = next(e for e in events if report_of(slow["version"])([e]))
    assert refused.type == "model.swap_failed", refused.payload
    check = refused.payload["check"]
    assert check["passed"] is False and check["current_version"] == before
    assert check["candidate_p99_ms"] > check["allowed_p99_ms"] and check["rows"] >= 8
    assert "p99" in refused.payload["reason"]
    assert served_version(stack) == before  # the old model still answers
    answer = httpx.post(f"{stack.url('serving')}/v1/predict", json={"features": GOOD}).json()
    assert answer["model_version"] == before

    fast = upload(stack, seed=42)
    events = read_topic(stack.bootstrap, topics.MODELS, report_of(fast["version"]), timeout_s=120)
    swapped = next(e for e in events if report_of(fast["version"])([e]))
    assert swapped.type == "model.swapped" and swapped.payload["check"]["passed"] is True
    wait_for(lambda: served_version(stack) == fast["version"], "the fast model to serve")


def test_registry_down_at_start_up_serves_the_cached_model(stack: Stack) -> None:
    cached = served_version(stack)
    assert cached is not None
    registry, serving = stack.processes["registry"], stack.processes["serving"]
    registry.terminate()
    registry.wait(30)
    serving.terminate()
    serving.wait(30)
    stack.spawn("serving")
    wait_for(lambda: served_version(stack) == cached, "serving to start from its cache", 120)
    answer = httpx.post(f"{stack.url('serving')}/v1/predict", json={"features": GOOD})
    assert answer.status_code == 200 and answer.json()["model_version"] == cached
    cache = Path(stack.folder) / "serving" / "cache" / "demo"  # type: ignore[attr-defined]
    assert (cache / "artifact.skops").exists() and (cache / "version.json").exists()
    stack.spawn("registry")  # back for the fixture's clean stop
