"""Checks incoming records and labels against the dataset schema, one field-level error each.

Ingest uses it on HTTP bodies and on the `raw` topic, serving on prediction inputs: the same
rules and the same messages everywhere. A batch is never all-or-nothing: `validate_records`
returns the valid records and an error per rejected one (its index, field and reason).

>>> from shared.schema import DatasetSchema
>>> s = DatasetSchema.model_validate({"name": "t",
...     "label": {"classes": [0, 1]},
...     "features": [{"name": "a", "type": "numeric", "min": 0}]})
>>> ok, errors = validate_records(s, [{"features": {"a": 1.5}}, {"features": {"a": -1}}])
>>> len(ok), errors[0].index, errors[0].field, errors[0].reason
(1, 1, 'features.a', 'below the minimum 0.0')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, TypeVar, cast

from pydantic import BaseModel

from shared.ids import new_id
from shared.schema import CategoricalFeature, DatasetSchema, LabelValue, NumericFeature

FeatureValue = float | str | int | None
Row = dict[str, FeatureValue]
"""One record's validated features, by name."""


class FieldError(BaseModel):
    """Why one input was refused: which item of the batch, which field, the reason in words
    and as a stable code (for metrics and programs)."""

    index: int
    field: str
    reason: str
    code: str = "invalid"
    id: str | None = None


class Record(BaseModel):
    """A validated record: what flows on `records` and into predictions."""

    id: str
    event_time: datetime
    features: dict[str, FeatureValue]
    label: LabelValue | None = None


class Label(BaseModel):
    """A validated late label for a record id."""

    id: str
    label: LabelValue
    event_time: datetime


class RecordFields(TypedDict):
    """A record that passed validation, as the fields of `Record`: what ingest writes with
    `shared.events.encode_validated`.

    NOTE: a dict, not the model: building the model (`Record.model_construct`) was about half
    of validating a five-feature record, and writing the model cost twice what writing the dict
    does (in-process, 20,000 records: validation 6.3 -> 3.0 µs, the envelope 6.3 -> 3.0 µs);
    ingest does both for every record it takes."""

    id: str
    event_time: datetime
    features: dict[str, FeatureValue]
    label: LabelValue | None


class LabelFields(TypedDict):
    """A label that passed validation, as the fields of `Label` (as `RecordFields`)."""

    id: str
    label: LabelValue
    event_time: datetime


class InvalidField(ValueError):
    """One field of one input is wrong; `field` is its dotted path."""

    def __init__(self, field: str, reason: str, code: str = "invalid") -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.code = field, reason, code


def _shown(value: Any, limit: int = 80) -> str:
    """A value quoted in an error, cut short: errors travel in responses and dead letters, and
    an input of megabytes must not make one of megabytes."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"<an integer of {_digits(value)} digits>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _digits(value: int) -> int:
    # NOTE: str() of an int over 4,300 digits raises (CPython's limit), so the count starts from
    # bit_length (at most one too many: 2**n has n*log10(2) + 1 digits or one fewer) and is
    # corrected by one comparison.
    magnitude = abs(value)
    digits = int(magnitude.bit_length() * 0.30103) + 1
    return digits - 1 if digits > 1 and magnitude < 10 ** (digits - 1) else digits


def new_record_id() -> str:
    return f"r-{new_id().replace('-', '')}"


def _check_id(schema: DatasetSchema, value: Any) -> str:
    if value is None:
        return new_record_id()
    if not isinstance(value, str):
        raise InvalidField("id", f"must be a string, got {type(value).__name__}", "type")
    if not schema.id_regex.fullmatch(value):
        raise InvalidField("id", f"does not match the id pattern {schema.id_pattern}", "id_format")
    return value


def _check_time(schema: DatasetSchema, value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if not isinstance(value, str):
        raise InvalidField("event_time", "must be an ISO 8601 string", "type")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidField("event_time", f"is not an ISO 8601 time: {_shown(value)}", "time_format") from None
    if parsed.tzinfo is None:
        raise InvalidField("event_time", "has no time zone (add Z or +00:00)", "time_zone")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before the first representable time
        raise InvalidField("event_time", f"is out of range: {_shown(value)}", "time_format") from None
    if parsed - now > timedelta(seconds=schema.max_future_seconds):
        raise InvalidField(
            "event_time", f"is more than {schema.max_future_seconds:g}s in the future", "time_future"
        )
    if now - parsed > timedelta(seconds=schema.max_past_seconds):
        raise InvalidField(
            "event_time", f"is more than {schema.max_past_seconds:g}s in the past", "time_past"
        )
    return parsed


def _check_numeric(spec: NumericFeature, value: Any) -> float:
    # NOTE: the common case first (a finite float within bounds), without building the field's
    # name: 10 numeric features took 4.9 µs per record before, in the monitor and in ingest.
    if (
        type(value) is float
        and math.isfinite(value)
        and (spec.min is None or value >= spec.min)
        and (spec.max is None or value <= spec.max)
    ):
        return value
    field = f"features.{spec.name}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(field, f"must be a number, got {type(value).__name__}", "type")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range (JSON allows any number of digits)
        digits = _digits(int(value))
        raise InvalidField(
            field, f"is an integer of {digits} digits, beyond a float's range", "range"
        ) from None
    if math.isnan(number):
        raise InvalidField(field, "is NaN", "nan")
    if math.isinf(number):
        raise InvalidField(field, "is infinite", "infinite")
    if spec.min is not None and number < spec.min:
        raise InvalidField(field, f"below the minimum {spec.min}", "range")
    if spec.max is not None and number > spec.max:
        raise InvalidField(field, f"above the maximum {spec.max}", "range")
    return number


def _check_categorical(spec: CategoricalFeature, value: Any) -> LabelValue:
    field = f"features.{spec.name}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidField(field, f"must be a string or integer category, got {type(value).__name__}", "type")
    if value not in spec.categories and spec.unseen == "reject":
        raise InvalidField(
            field, f"{_shown(value)} is not one of the categories {_shown(spec.categories)}", "category"
        )
    return value


def check_features(schema: DatasetSchema, features: Any) -> dict[str, FeatureValue]:
    """Validate a `features` object; raises `InvalidField` on the first problem."""
    if not isinstance(features, dict):
        raise InvalidField("features", "must be an object of feature name to value", "type")
    if not features.keys() <= schema.known_features:
        unknown = sorted(set(features) - schema.known_features)
        raise InvalidField(f"features.{unknown[0]}", "is not a feature of the schema", "unknown_field")
    clean: dict[str, FeatureValue] = {}
    for spec in schema.features:
        value = features.get(spec.name)
        if value is None:
            if spec.required:
                raise InvalidField(f"features.{spec.name}", "is required", "missing")
            clean[spec.name] = None
        elif isinstance(spec, NumericFeature):
            clean[spec.name] = _check_numeric(spec, value)
        else:
            clean[spec.name] = _check_categorical(spec, value)
    return clean


def check_label(schema: DatasetSchema, value: Any) -> LabelValue:
    if isinstance(value, bool) or value not in schema.label.classes:
        raise InvalidField(
            "label", f"{_shown(value)} is not one of the classes {schema.label.classes}", "label"
        )
    return cast(LabelValue, value)  # one of the classes, so an int or a str


_RECORD_KEYS = frozenset(Record.model_fields)
_LABEL_KEYS = frozenset(Label.model_fields)


def validate_record(schema: DatasetSchema, raw: Any, now: datetime | None = None) -> RecordFields:
    """One record, or `InvalidField`. Generates `id` and `event_time` when absent."""
    now = now or datetime.now(UTC)
    if not isinstance(raw, dict):
        raise InvalidField("<record>", "must be a JSON object", "type")
    if not raw.keys() <= _RECORD_KEYS:
        raise InvalidField(
            sorted(raw.keys() - _RECORD_KEYS)[0],
            "is not a record field (id, event_time, features, label)",
            "unknown_field",
        )
    label = raw.get("label")
    return {
        "id": _check_id(schema, raw.get("id")),
        "event_time": _check_time(schema, raw.get("event_time"), now),
        "features": check_features(schema, raw.get("features")),
        "label": None if label is None else check_label(schema, label),
    }


def _raw_id(raw: Any) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def validate_label(schema: DatasetSchema, raw: Any, now: datetime | None = None) -> LabelFields:
    """One `{"id", "label"}` object, or `InvalidField`."""
    now = now or datetime.now(UTC)
    if not isinstance(raw, dict):
        raise InvalidField("<label>", "must be a JSON object", "type")
    if not raw.keys() <= _LABEL_KEYS:
        raise InvalidField(
            sorted(raw.keys() - _LABEL_KEYS)[0],
            "is not a label field (id, label, event_time)",
            "unknown_field",
        )
    if raw.get("id") is None:
        raise InvalidField("id", "is required", "missing")
    return {
        "id": _check_id(schema, raw["id"]),
        "label": check_label(schema, raw.get("label")),
        "event_time": _check_time(schema, raw.get("event_time"), now),
    }


T = TypeVar("T")


def _split(items: Iterable[Any], validate_one: Callable[[Any], T]) -> tuple[list[T], list[FieldError]]:
    """Valid items, and one `FieldError` (index, field, reason, code, id) per rejected one."""
    valid: list[T] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(items):
        try:
            valid.append(validate_one(raw))
        except InvalidField as exc:
            errors.append(
                FieldError(index=index, field=exc.field, reason=exc.reason, code=exc.code, id=_raw_id(raw))
            )
    return valid, errors


def validate_records(
    schema: DatasetSchema, items: Iterable[Any], now: datetime | None = None
) -> tuple[list[RecordFields], list[FieldError]]:
    """Split a batch into valid records and one `FieldError` per rejected item."""
    now = now or datetime.now(UTC)
    return _split(items, lambda raw: validate_record(schema, raw, now))


def validate_labels(
    schema: DatasetSchema, items: Iterable[Any], now: datetime | None = None
) -> tuple[list[LabelFields], list[FieldError]]:
    """Split a batch of `{"id", "label"}` objects into valid labels and errors."""
    now = now or datetime.now(UTC)
    return _split(items, lambda raw: validate_label(schema, raw, now))
