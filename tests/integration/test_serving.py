"""Serving against real registry and serving processes: a hot swap under concurrent load with
no failed request, a corrupted artifact refused while the old model keeps serving, and a
restart while the registry is down (the cached model serves)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.supervisor import Stack
from shared import topics
from shared.events import Envelope
from tests.fixtures import demo_schema
from tests.integration.conftest import read_topic, start_stack, stop_stack, upload_demo, wait_for

pytestmark = pytest.mark.integration

TOKEN = "serving-test-token-0123456789"
GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("serving")
    running = start_stack(folder, services=("registry", "serving"), CTLOOP_REGISTRY_TOKEN=TOKEN)
    running.folder = folder  # type: ignore[attr-defined]
    yield running
    stop_stack(running)


def upload(stack: Stack, seed: int, passed: bool = True) -> dict:
    return upload_demo(stack.url("registry"), TOKEN, seed=seed, rows=300, passed=passed)


def served_version(stack: Stack) -> int | None:
    try:
        return httpx.get(f"{stack.url('serving')}/healthz", timeout=5).json().get("model_version")
    except httpx.HTTPError:
        return None


def test_hot_swap_under_load_fails_no_request(stack: Stack) -> None:
    first = upload(stack, seed=1)["version"]
    wait_for(lambda: served_version(stack) == first, "serving to load v1", 120)
    stop, failures, seen = threading.Event(), [], []

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                response = http.post(
                    f"{stack.url('serving')}/v1/predict",
                    json={"records": [{"features": GOOD}, {"features": {**GOOD, "x1": -1.0}}]},
                )
                if response.status_code != 200:
                    failures.append(response.status_code)
                    continue
                body = response.json()
                # one version computed the whole response
                assert {p["model_version"] for p in body["predictions"]} == {body["model_version"]}
                seen.append(body["model_version"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(seen) > 50, "load to build up", 60)
    second = upload(stack, seed=2)["version"]
    wait_for(
        lambda: seen and seen[-1] == second and len([v for v in seen if v == second]) > 50,
        "responses from v2 under load",
        120,
    )
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert set(seen) == {first, second}
    assert seen.index(second) > 0 and all(v == second for v in seen[-20:])


def test_corrupted_artifact_is_refused_and_the_old_model_keeps_serving(stack: Stack) -> None:
    before = served_version(stack)
    candidate = upload(stack, seed=3, passed=False)  # registered, not promoted
    digest = candidate["digest"][len("sha256:") :]
    path = stack.folder / "registry" / "artifacts" / digest[:2] / digest  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-3] + b"bad")
    promoted = httpx.post(
        f"{stack.url('registry')}/v1/models/demo/versions/{candidate['version']}/promote",
        headers={"Authorization": f"Bearer {TOKEN}"},
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
    import numpy as np
    import tritonclient.http as v2

    client = v2.InferenceServerClient(url=stack.url("serving").removeprefix("http://"))
    server = client.get_server_metadata()
    assert server["name"] == "ctloop" and "binary_tensor_data" in server["extensions"]
    rows = [GOOD, {**GOOD, "x1": -2.0, "color": "blue"}]
    inputs = []
    for spec in demo_schema().features:
        numeric = spec.type == "numeric"
        tensor = v2.InferInput(spec.name, [len(rows)], "FP64" if numeric else "BYTES")
        tensor.set_data_from_numpy(
            np.array([r[spec.name] for r in rows], dtype=np.float64 if numeric else object)
        )
        inputs.append(tensor)
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
        stack.url("registry"),
        TOKEN,
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
