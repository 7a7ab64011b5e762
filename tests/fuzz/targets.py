"""Coverage-guided fuzz targets (atheris) for the code that parses what outsiders send: the
JSON reader and record/label validation (ingest's two doors, serving's rows), the event
envelope decoder (every consumer) and the V2 inference request decoders (serving: HTTP and
gRPC).

Each target takes raw bytes and may only end in the refusals it documents (`MalformedJSON`,
field errors, `BadEvent`, a 4xx `ServiceError`); any other exception is a finding. Run one with
`python -m tests.fuzz.run TARGET --seconds N` (tests/fuzz/run.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.events import DEAD_LETTER_EXCERPT_CHARS, BadEvent, Envelope, dead_letter_of
from shared.http import ServiceError
from shared.json_input import MalformedJSON, loads_json
from shared.schema import DatasetSchema, load_schema
from shared.settings import DEFAULT_SCHEMA
from shared.validation import InvalidField, check_features, validate_labels, validate_records

SCHEMA: DatasetSchema = load_schema(DEFAULT_SCHEMA)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def validation(data: bytes) -> None:
    """Bytes as ingest reads them: parsed, then validated as records and as labels (a batch
    never raises: each item is valid or one field error)."""
    try:
        parsed = loads_json(data)
    except MalformedJSON:
        return
    items = parsed if isinstance(parsed, list) else [parsed]
    valid, errors = validate_records(SCHEMA, items, now=NOW)
    assert len(valid) + len(errors) == len(items)
    assert all(len(e.reason) < 1000 for e in errors), "an error quoting its input at length"
    valid_labels, label_errors = validate_labels(SCHEMA, items, now=NOW)
    assert len(valid_labels) + len(label_errors) == len(items)


def envelope(data: bytes) -> None:
    """Bytes as a consumer reads them from any topic: an event or `BadEvent`; and the dead
    letter for them stays small whatever they are."""
    try:
        event = Envelope.decode(data)
        payload = event.parsed()
    except BadEvent as exc:
        letter = dead_letter_of("fuzz", str(exc), data, 0, 0)
        assert len(letter.original) <= DEAD_LETTER_EXCERPT_CHARS + 64
        assert len(letter.model_dump_json()) < 64 * 1024
        return
    features = getattr(payload, "features", None)
    if isinstance(features, dict):  # what the trainer and the monitor check before use
        with contextlib.suppress(InvalidField):
            check_features(SCHEMA, features)


@dataclass
class _Model:
    """What the V2 decoder reads of a loaded model: its schema."""

    schema: DatasetSchema


def _rows_or_refusal(decode: Callable[[], Any]) -> None:
    """Run a V2 decoder: it may refuse with a 4xx; the rows it makes are checked as serving
    checks them."""
    from services.serving.v2 import _rows

    try:
        rows = _rows(_Model(SCHEMA), decode())  # type: ignore[arg-type]
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500
        return
    for _, features in rows:
        with contextlib.suppress(InvalidField):
            check_features(SCHEMA, features)


def v2_request(data: bytes) -> None:
    """Bytes as a V2 infer body: a request whose tensors become rows, or a 4xx. A body that
    starts with `B` and two length bytes is a binary-extension body (that many bytes of JSON
    header, then the tensors' raw data)."""
    from services.serving.v2 import InferenceRequest, parse_request
    from services.serving.v2_binary import attach_inputs, split_body

    header_length = None
    if data[:1] == b"B" and len(data) >= 3:
        header_length, data = str(int.from_bytes(data[1:3], "little")), data[3:]

    def decode() -> InferenceRequest:
        header, binary = split_body(data, header_length)
        request = parse_request(header)
        attach_inputs(request.inputs, binary)
        return request

    _rows_or_refusal(decode)


def grpc_request(data: bytes) -> None:
    """Bytes as a gRPC ModelInfer call's: a request whose tensors become rows, or a 4xx."""
    from services.serving.grpc_server import parse, request_from_message
    from services.serving.protocol import inference_pb2 as pb

    _rows_or_refusal(lambda: request_from_message(parse(pb.ModelInferRequest, data)))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "validation": validation,
    "envelope": envelope,
    "v2": v2_request,
    "grpc": grpc_request,
}
