"""The event envelope: round trip, lineage ids, and refusal of what is not an event."""

from __future__ import annotations

import pytest

from shared.events import (
    EVENT_PAYLOADS,
    EVENT_TYPES,
    BadEvent,
    Envelope,
    ModelPromoted,
    ModelRegistered,
    Prediction,
    Source,
    TrainingCompleted,
    TrainingEvent,
    TrainingFailed,
    TrainingStarted,
    encode_event,
    encode_validated,
)
from shared.vocabulary import EventType

SRC = Source(service="test", instance="t-1")


def new_event(*args: object, **kwargs: object) -> Envelope:
    """An event as its consumers see it: written by `encode_event`, read back."""
    return Envelope.decode(encode_event(*args, **kwargs)[1])  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    payload = ModelPromoted(model_name="demo", version=3, alias="champion", digest="sha256:" + "0" * 64)
    event_id, data = encode_event(payload, SRC)
    back = Envelope.decode(data)
    assert back.event_id == event_id and back.type == "model.promoted" and back.source == SRC
    parsed = back.parsed()
    assert parsed == payload and type(parsed) is ModelPromoted  # the event type's own class
    assert back.schema_version == 1 and back.occurred_at.tzinfo is not None


def test_encode_event_writes_exactly_what_the_envelope_model_writes() -> None:
    from datetime import UTC, datetime

    from shared.validation import Record

    record = Record(
        id="r-\u00e9-1",  # a non-ASCII id: escaping must match too
        event_time=datetime(2026, 11, 21, 5, 0, 0, 250, tzinfo=UTC),
        features={"x1": 1.5, "color": "blue", "x2": None},
        label=1,
    )
    cause = new_event(record, SRC)
    event_id, data = encode_event(record, SRC, cause=cause)
    back = Envelope.decode(data)
    assert back.encode() == data  # the bytes are what the Envelope model itself would write
    assert back.event_id == event_id and back.parsed() == record
    assert (back.correlation_id, back.causation_id) == (cause.correlation_id, cause.event_id)


def test_an_event_written_from_validated_fields_reads_back_as_encode_event_writes_it() -> None:
    from datetime import UTC, datetime

    fields: dict[str, object] = {
        "prediction_id": "p-1",
        "record_id": "r-\u00e9-1",
        "model_name": "demo",
        "model_version": 4,
        "features": {"x1": 1.5, "x2": 1e-7, "big": 1e22, "color": "blue", "missing": None},
        "prediction": "yes",
        "probabilities": {"no": 0.25, "yes": 0.75},
        "event_time": datetime(2026, 11, 21, 5, 0, 0, 250, tzinfo=UTC),
        "shadow": True,
    }
    event_id, data = encode_validated(Prediction, fields, SRC)
    fast, slow = Envelope.decode(data), new_event(Prediction(**fields), SRC)  # type: ignore[arg-type]
    assert fast.event_id == event_id == fast.correlation_id and fast.causation_id is None
    assert (fast.type, fast.schema_version, fast.source) == (slow.type, slow.schema_version, slow.source)
    assert fast.occurred_at.tzinfo is not None
    assert fast.payload == slow.payload and fast.parsed() == slow.parsed()


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "r-1", "features": {"x1": 3, "x2": 1e-7, "x3": 1e22, "amount": 0, "color": "red"}},
        {"features": {"x1": -0.5, "x2": 2.0, "x3": 0.1, "amount": 9.99, "color": "blue"}, "label": 1},
        {
            "id": "r-2",
            "event_time": "2026-11-21T07:00:00.000250+02:00",
            "features": {"x1": 1.0, "x2": 2.0, "x3": 3.0, "amount": 4.0, "color": "green"},
            "label": 0,
        },
    ],
)
def test_records_written_from_their_validated_fields_read_back_as_the_model_writes_them(
    raw: dict[str, object],
) -> None:
    from datetime import UTC, datetime

    from shared.validation import Record, validate_records
    from tests.fixtures import demo_schema

    [fields], errors = validate_records(demo_schema(), [raw], now=datetime(2026, 11, 21, 5, 30, tzinfo=UTC))
    assert not errors
    fast, slow = Envelope.decode(encode_validated(Record, fields, SRC)[1]), new_event(Record(**fields), SRC)
    assert fast.type == slow.type == "record.accepted"
    assert fast.payload == slow.payload and fast.parsed() == slow.parsed()


def test_labels_written_from_their_validated_fields_read_back_as_the_model_writes_them() -> None:
    from datetime import UTC, datetime

    from shared.validation import Label, validate_labels
    from tests.fixtures import demo_schema

    raw = {"id": "r-1", "label": 1, "event_time": "2026-11-21T05:00:00Z"}
    [fields], errors = validate_labels(demo_schema(), [raw], now=datetime(2026, 11, 21, 5, 30, tzinfo=UTC))
    assert not errors
    fast, slow = Envelope.decode(encode_validated(Label, fields, SRC)[1]), new_event(Label(**fields), SRC)
    assert fast.type == slow.type and fast.payload == slow.payload and fast.parsed() == slow.parsed()


def test_correlation_follows_the_cause() -> None:
    drift = new_event(TrainingStarted(run_id="r", model_name="demo", trigger="drift"), SRC)
    child = new_event(TrainingCompleted(run_id="r", model_name="demo", trigger="drift"), SRC, cause=drift)
    assert child.correlation_id == drift.event_id
    assert child.causation_id == drift.event_id
    explicit = new_event(
        TrainingFailed(run_id="r", model_name="demo", trigger="manual"),
        SRC,
        correlation_id="loop-1",
        causation_id="trigger-1",
    )
    assert (explicit.correlation_id, explicit.causation_id) == ("loop-1", "trigger-1")


def test_the_event_type_comes_from_the_payload_class_and_only_event_classes_are_sent() -> None:
    assert new_event(ModelRegistered(model_name="d", version=1, digest="x"), SRC).type == "model.registered"
    with pytest.raises(TypeError, match="TrainingEvent is no event payload"):  # the shared base
        encode_event(TrainingEvent(run_id="r", model_name="d", trigger="manual"), SRC)  # type: ignore[arg-type]


def test_each_event_type_has_a_class_of_its_own() -> None:
    assert set(EVENT_PAYLOADS) == set(EventType)
    assert len(EVENT_TYPES) == len(EVENT_PAYLOADS)  # no class serves two types


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not a ctloop event envelope"),
        (b'{"type": "x"}', "not a ctloop event envelope"),
        (
            b'{"type": "nope", "source": {"service": "s", "instance": "i"}, "correlation_id": "c", "payload": {}}',
            "unknown event type 'nope'",
        ),
    ],
)
def test_decode_refuses_non_events(data: bytes, message: str) -> None:
    with pytest.raises(BadEvent, match=message):
        Envelope.decode(data)


def test_newer_schema_version_is_refused() -> None:
    event = new_event(TrainingStarted(run_id="r", model_name="d", trigger="manual"), SRC)
    newer = event.model_copy(update={"schema_version": 2}).encode()
    with pytest.raises(BadEvent, match="schema_version 2; this service reads up to 1"):
        Envelope.decode(newer)


def test_parsed_refuses_a_payload_that_does_not_fit() -> None:
    event = Envelope(type="model.promoted", source=SRC, correlation_id="c", payload={"version": "three"})
    with pytest.raises(BadEvent, match=r"model\.promoted payload invalid"):
        event.parsed()


def test_every_topic_has_typed_payloads() -> None:
    prefixes = {t.split(".")[0] for t in EVENT_PAYLOADS}
    assert prefixes == {
        "record",
        "label",
        "input",
        "prediction",
        "example",
        "outcome",
        "drift",
        "run",
        "training",
        "model",
        "window",
        "quality",
    }
