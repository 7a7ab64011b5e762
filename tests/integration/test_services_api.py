"""Each service's HTTP API and Kafka door on a real stack with no model yet: ingest outcomes
and dead letters, the raw topic, serving's cold start and first swap, registry refusals."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
import skops.io as sio
from kafka import KafkaProducer
from sklearn.preprocessing import FunctionTransformer

from services.supervisor import Stack
from shared import topics
from shared.registry_api import GateReport, Lineage, VersionMetadata
from shared.serialization import digest
from tests.fixtures import demo_artifact, demo_schema
from tests.integration.conftest import read_topic, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration

GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("api"),
        CTLOOP_INGEST_MAX_BATCH="50",
        CTLOOP_TRAINER_MIN_EXAMPLES="100000",
    )
    yield running
    stop_stack(running)


def test_mixed_batch_and_idempotent_retry(api: Stack) -> None:
    batch = {
        "records": [
            {"id": "mix-1", "features": GOOD, "label": 1},
            {"id": "mix-2", "features": {**GOOD, "x1": "NaN"}},
            {"id": "mix-3", "features": GOOD},
        ]
    }
    first = httpx.post(f"{api.url('ingest')}/v1/records", json=batch, headers=api.auth("producer"))
    assert first.status_code == 200
    body = first.json()
    assert [a["id"] for a in body["accepted"]] == ["mix-1", "mix-3"]
    assert body["rejected"] == [
        {
            "index": 1,
            "field": "features.x1",
            "reason": "must be a number, got str",
            "code": "type",
            "id": "mix-2",
        }
    ]
    retry = httpx.post(f"{api.url('ingest')}/v1/records", json=batch, headers=api.auth("producer")).json()
    assert retry["accepted"] == [] and [d["id"] for d in retry["duplicates"]] == ["mix-1", "mix-3"]

    records = read_topic(
        api.bootstrap, topics.RECORDS, lambda ev: {e.payload["id"] for e in ev} >= {"mix-1", "mix-3"}
    )
    assert sorted(e.payload["id"] for e in records if e.payload["id"].startswith("mix-")) == [
        "mix-1",
        "mix-3",
    ]
    letters = read_topic(
        api.bootstrap, topics.DEADLETTER, lambda ev: any("mix-2" in e.payload["original"] for e in ev)
    )
    letter = next(e for e in letters if "mix-2" in e.payload["original"])
    assert letter.payload["errors"][0]["field"] == "features.x1"
    assert json.loads(letter.payload["original"])["features"]["x1"] == "NaN"


def test_labels_ndjson_and_limits(api: Stack) -> None:
    url = api.url("ingest")
    # label poisoning needs the producer's token (ingest knows no other role's: 401 for those)
    for header, status in (({}, 401), (api.auth("trainer"), 401)):
        poisoned = httpx.post(
            f"{url}/v1/labels", json={"labels": [{"id": "mix-1", "label": 0}]}, headers=header
        )
        assert poisoned.status_code == status, poisoned.text
    labels = httpx.post(
        f"{url}/v1/labels",
        json={"labels": [{"id": "mix-1", "label": 1}, {"id": "x", "label": 7}]},
        headers=api.auth("producer"),
    )
    assert labels.json()["rejected"][0]["reason"] == "7 is not one of the classes [0, 1]"
    ndjson = "\n".join(json.dumps({"id": f"nd-{i}", "features": GOOD}) for i in range(3))
    response = httpx.post(
        f"{url}/v1/records",
        content=ndjson,
        headers={"content-type": "application/x-ndjson", **api.auth("producer")},
    )
    assert len(response.json()["accepted"]) == 3
    broken = httpx.post(
        f"{url}/v1/records",
        content=b'{"records": [1, 2',
        headers={"content-type": "application/json", **api.auth("producer")},
    )
    assert broken.status_code == 400 and "malformed JSON at line 1, column" in broken.json()["detail"]
    broken_line = httpx.post(
        f"{url}/v1/records",
        content=ndjson + "\n{oops",
        headers={"content-type": "application/x-ndjson", **api.auth("producer")},
    )
    assert broken_line.status_code == 400
    assert broken_line.json()["detail"].startswith("malformed JSON on line 4, column 2")
    latin1 = httpx.post(
        f"{url}/v1/records",
        content='{"records": ["caf\u00e9"]}'.encode("latin-1"),
        headers={"content-type": "application/json", **api.auth("producer")},
    )
    assert latin1.status_code == 400 and "is not UTF-8" in latin1.json()["detail"]
    big = httpx.post(
        f"{url}/v1/records", json={"records": [{"features": GOOD}] * 51}, headers=api.auth("producer")
    )
    assert big.status_code == 413 and "batch limit of 50" in big.json()["detail"]
    schema = httpx.get(f"{url}/v1/schema").json()
    assert schema["name"] == "demo" and schema["features"][0]["name"] == "x1"


def test_raw_topic_is_validated_like_http(api: Stack) -> None:
    producer = KafkaProducer(bootstrap_servers=api.bootstrap, acks="all")
    producer.send(topics.RAW, json.dumps({"id": "raw-1", "features": GOOD}).encode())
    producer.send(topics.RAW, json.dumps({"id": "raw-2", "features": {**GOOD, "amount": -1}}).encode())
    producer.send(topics.RAW, b"{not json")
    producer.flush()
    producer.close()
    read_topic(api.bootstrap, topics.RECORDS, lambda ev: any(e.payload["id"] == "raw-1" for e in ev))
    letters = read_topic(
        api.bootstrap,
        topics.DEADLETTER,
        lambda ev: sum(e.payload["origin"] == topics.RAW for e in ev) >= 2,
    )
    reasons = {e.payload["errors"][0]["reason"] for e in letters if e.payload["origin"] == topics.RAW}
    assert "below the minimum 0.0" in reasons
    assert any(r.startswith("malformed JSON") for r in reasons)


def _metadata(artifact_digest: str) -> VersionMetadata:
    return VersionMetadata(
        digest=artifact_digest,
        input_schema=demo_schema(),
        metrics={"accuracy": 0.9},
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id="run-test", trigger="manual"),
    )


def _good_artifact() -> bytes:
    return demo_artifact(rows=300)[0]


def _upload(api: Stack, artifact: bytes, metadata: str, token: str | None = None) -> httpx.Response:
    token = api.token("trainer") if token is None else token
    return httpx.post(
        f"{api.url('registry')}/v1/models/demo/versions",
        headers={"Authorization": f"Bearer {token}"} if token else {},
        files={"artifact": ("m.skops", artifact)},
        data={"metadata": metadata},
    )


def test_a_manual_run_needs_the_operator_token(api: Stack) -> None:
    runs = f"{api.url('trainer')}/v1/runs"
    for header in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(runs, headers=header)
        assert refused.status_code == 401 and "starting a run" in refused.json()["detail"], header
    for role in ("trainer", "monitor", "reader"):  # real tokens, but not a person's
        refused = httpx.post(runs, headers=api.auth(role))
        assert refused.status_code == 403 and "operator only" in refused.json()["detail"], role
    started = httpx.post(runs, headers=api.auth("operator"))
    assert started.status_code == 202 and started.json()["kind"] == "manual"


def test_registry_refuses_what_it_must(api: Stack) -> None:
    good = _good_artifact()
    good_meta = _metadata(digest(good)).model_dump_json()
    assert _upload(api, good, good_meta, token="").status_code == 401
    assert _upload(api, good, good_meta, token="wrong").status_code == 401

    tampered = _upload(api, b"PK not the artifact", good_meta)
    assert tampered.status_code == 400 and "does not match metadata.digest" in tampered.json()["detail"]

    untrusted = sio.dumps(FunctionTransformer(os.system))
    refused = _upload(api, untrusted, _metadata(digest(untrusted)).model_dump_json())
    assert refused.status_code == 400 and "posix.system" in refused.json()["detail"]

    no_schema = json.loads(good_meta)
    no_schema.pop("input_schema")
    missing = _upload(api, good, json.dumps(no_schema))
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "metadata.input_schema"

    traversal = httpx.get(f"{api.url('registry')}/v1/models/..%2Fetc/versions", headers=api.auth())
    assert traversal.status_code in (404, 422)


def grpc_health(api: Stack, service: str = "") -> str:
    """The standard gRPC health check of serving (what Kubernetes' gRPC probe asks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(api.grpc_target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def test_serving_cold_start_then_first_swap(api: Stack) -> None:
    import grpc

    serving = api.url("serving")
    cold = httpx.post(f"{serving}/v1/predict", json={"records": [{"id": "c-1", "features": GOOD}]})
    assert cold.status_code == 503 and "cold start" in cold.json()["detail"]
    assert cold.headers["retry-after"] == "5"
    assert httpx.get(f"{serving}/healthz").status_code == 503
    wait_for(lambda: grpc_health(api) == "NOT_SERVING", "the gRPC health service to answer")
    assert grpc_health(api, "inference.GRPCInferenceService") == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as unknown:
        grpc_health(api, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    artifact_bytes = _good_artifact()
    created = _upload(api, artifact_bytes, _metadata(digest(artifact_bytes)).model_dump_json())
    assert created.status_code == 201, created.text
    version = created.json()["version"]
    assert created.json()["aliases"] == ["champion", "staging"]
    artifact = httpx.get(
        f"{api.url('registry')}/v1/models/demo/versions/{version}/artifact", headers=api.auth()
    )
    assert artifact.headers["x-ctloop-digest"] == created.json()["digest"]

    wait_for(lambda: httpx.get(f"{serving}/healthz").status_code == 200, "serving to load the champion")
    wait_for(
        lambda: grpc_health(api) == grpc_health(api, "inference.GRPCInferenceService") == "SERVING",
        "gRPC health",
    )
    answer = httpx.post(f"{serving}/v1/predict", json={"id": "p-1", "features": GOOD}).json()
    assert answer["model_version"] == version
    prediction = answer["predictions"][0]
    assert prediction["id"] == "p-1" and set(prediction["probabilities"]) == {"0", "1"}
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-9

    bad = httpx.post(
        f"{serving}/v1/predict", json={"records": [{"features": GOOD}, {"features": {**GOOD, "color": "x"}}]}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"] == [
        {
            "index": 1,
            "field": "features.color",
            "reason": "'x' is not one of the categories ['red', 'green', 'blue']",
            "code": "category",
        }
    ]
    logged = read_topic(
        api.bootstrap, topics.PREDICTIONS, lambda ev: any(e.payload["record_id"] == "p-1" for e in ev)
    )
    assert next(e for e in logged if e.payload["record_id"] == "p-1").payload["model_version"] == version
    swaps = read_topic(api.bootstrap, topics.MODELS, lambda ev: any(e.type == "model.swapped" for e in ev))
    assert [e.payload["version"] for e in swaps if e.type == "model.swapped"] == [version]
