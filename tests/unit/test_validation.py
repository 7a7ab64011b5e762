"""Every validation rule, with a bad input and its exact error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.validation import validate_labels, validate_records
from tests.fixtures import credit_schema, demo_schema

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DROP = object()
GOOD = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "amount": 12.5, "color": "red"}


def one_error(record: object) -> tuple[str, str]:
    valid, errors = validate_records(demo_schema(), [record], now=NOW)
    assert not valid and len(errors) == 1
    return errors[0].field, errors[0].reason


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"x1": DROP}, "features.x1", "is required"),
        ({"color": DROP}, "features.color", "is required"),
        ({"color": None}, "features.color", "is required"),
        ({"shoe_size": 42}, "features.shoe_size", "is not a feature of the schema"),
        ({"x1": "0.3"}, "features.x1", "must be a number, got str"),
        ({"x1": True}, "features.x1", "must be a number, got bool"),
        ({"x1": float("nan")}, "features.x1", "is NaN"),
        ({"x1": float("inf")}, "features.x1", "is infinite"),
        ({"x1": float("-inf")}, "features.x1", "is infinite"),
        ({"amount": -0.01}, "features.amount", "below the minimum 0.0"),
        (
            {"color": "purple"},
            "features.color",
            "'purple' is not one of the categories ['red', 'green', 'blue']",
        ),
        ({"color": 3.5}, "features.color", "must be a string or integer category, got float"),
    ],
)
def test_feature_rules(change: dict[str, object], field: str, reason: str) -> None:
    features = {k: v for k, v in {**GOOD, **change}.items() if v is not DROP}
    assert one_error({"features": features}) == (field, reason)


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"features": GOOD, "label": 2}, "label", "2 is not one of the classes [0, 1]"),
        ({"features": GOOD, "label": True}, "label", "True is not one of the classes [0, 1]"),
        (
            {"features": GOOD, "id": "has space"},
            "id",
            "does not match the id pattern ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        ),
        ({"features": GOOD, "id": 12}, "id", "must be a string, got int"),
        ({"features": GOOD, "event_time": "yesterday"}, "event_time", "is not an ISO 8601 time: 'yesterday'"),
        (
            {"features": GOOD, "event_time": "2026-11-21T12:00:00"},
            "event_time",
            "has no time zone (add Z or +00:00)",
        ),
        (
            {"features": GOOD, "event_time": (NOW + timedelta(hours=1)).isoformat()},
            "event_time",
            "is more than 300s in the future",
        ),
        (
            {"features": GOOD, "event_time": (NOW - timedelta(days=31)).isoformat()},
            "event_time",
            "is more than 2.592e+06s in the past",
        ),
        (
            {"features": GOOD, "colour": "red"},
            "colour",
            "is not a record field (id, event_time, features, label)",
        ),
        ({"features": [1, 2]}, "features", "must be an object of feature name to value"),
        ("not an object", "<record>", "must be a JSON object"),
    ],
)
def test_record_rules(record: object, field: str, reason: str) -> None:
    assert one_error(record) == (field, reason)


def test_generated_id_and_time() -> None:
    valid, errors = validate_records(demo_schema(), [{"features": GOOD}], now=NOW)
    assert not errors
    assert valid[0]["id"].startswith("r-") and valid[0]["event_time"] == NOW and valid[0]["label"] is None


def test_mixed_batch_keeps_the_valid_records() -> None:
    batch = [
        {"id": "a", "features": GOOD, "label": 1},
        {"id": "b", "features": {**GOOD, "x1": "bad"}},
        {"id": "c", "features": GOOD},
        {"id": "d", "features": {**GOOD, "amount": -5}},
    ]
    valid, errors = validate_records(demo_schema(), batch, now=NOW)
    assert [r["id"] for r in valid] == ["a", "c"]
    assert [(e.index, e.id, e.field) for e in errors] == [
        (1, "b", "features.x1"),
        (3, "d", "features.amount"),
    ]


def test_second_schema_rules() -> None:
    schema = credit_schema()
    base = {"age": 30, "debt_ratio": 0.5, "housing": "own", "purpose": "car"}
    valid, errors = validate_records(
        schema,
        [
            {"id": "app-1", "features": base, "label": "no"},  # income optional
            {"id": "app-2", "features": {**base, "housing": "boat"}},  # unseen: accept
            {"id": "app-3", "features": {**base, "purpose": "boat"}},  # unseen: reject
            {"id": "r-4", "features": base},  # id pattern
            {"id": "app-5", "features": {**base, "age": 17}},  # range
            {"id": "app-6", "features": base, "label": 1},  # label type
        ],
        now=NOW,
    )
    assert [r["id"] for r in valid] == ["app-1", "app-2"]
    assert [(e.id, e.field) for e in errors] == [
        ("app-3", "features.purpose"),
        ("r-4", "id"),
        ("app-5", "features.age"),
        ("app-6", "label"),
    ]


def test_labels() -> None:
    valid, errors = validate_labels(
        demo_schema(),
        [
            {"id": "a", "label": 1},
            {"label": 0},
            {"id": "b", "label": "1"},
            {"id": "c", "label": 0, "x": 1},
        ],
        now=NOW,
    )
    assert [v["id"] for v in valid] == ["a"]
    assert [(e.index, e.field, e.reason) for e in errors] == [
        (1, "id", "is required"),
        (2, "label", "'1' is not one of the classes [0, 1]"),
        (3, "x", "is not a label field (id, label, event_time)"),
    ]


def test_inputs_that_used_to_raise_are_field_errors_with_short_reasons() -> None:
    """An integer beyond a float's range raised OverflowError (a 500, and a stalled consumer);
    a time before year 1 in UTC too; a megabyte category came back in full in its error."""
    field, reason = one_error({"features": {**GOOD, "x1": 10**400}})
    assert (field, reason) == ("features.x1", "is an integer of 401 digits, beyond a float's range")
    field, reason = one_error({"features": {**GOOD, "x1": -(10**5000)}})
    assert field == "features.x1" and "5001 digits" in reason
    field, reason = one_error({"features": GOOD, "event_time": "0001-01-01T00:00:00+01:00"})
    assert field == "event_time" and reason.startswith("is out of range")
    field, reason = one_error({"features": {**GOOD, "color": "\x01" * 200_000}})
    assert field == "features.color" and len(reason) < 300
    valid, errors = validate_labels(demo_schema(), [{"id": "r-1", "label": 10**5000}], now=NOW)
    assert not valid and "5001 digits" in errors[0].reason
