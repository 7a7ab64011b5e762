"""The join of a record's events: its prediction (and the challenger's shadow prediction),
its features, and its label, which may arrive in any order and more than once.

`step` is pure: given what is kept for a record id (a dict, kept in the `JoinStore`) and one
new event, it says what to keep now, which features to test, and, once label
and features are both there, the labelled example and the prediction outcomes. The agent does
the I/O. A record that arrives with its label completes at once.

>>> from datetime import UTC, datetime
>>> from shared.validation import Label
>>> first = step(None, Label(id="r-1", label=1, event_time=datetime(2026, 11, 21, tzinfo=UTC)), "r-1")
>>> first.example is None and first.entry["l"] == 1   # the label came first: it waits
True
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from shared.events import Example, Prediction
from shared.validation import Label, Record

Entry = dict[str, Any]


class Step(NamedTuple):
    # NOTE: a tuple, not a frozen dataclass: one is made per event the monitor reads, and a
    # frozen dataclass's __init__ sets each field through object.__setattr__.
    entry: Entry | None
    """What to keep for the record id now; None: nothing (forget it)."""
    features: tuple[dict[str, Any], datetime] | None = None
    """Features to add to the drift windows (from a record or a champion's prediction)."""
    example: Example | None = None
    outcome: tuple[int, bool, datetime] | None = None
    """(model version, was the prediction right, the record's time) once labelled."""
    shadow: tuple[int, bool] | None = None
    """(challenger version, was its shadow prediction right), with an outcome."""


def step(entry: Entry | None, payload: Record | Prediction | Label, record_id: str) -> Step:
    kept: Entry = dict(entry or {})
    features = None
    if isinstance(payload, Prediction) and payload.shadow:
        kept.update(sp=payload.prediction, sv=payload.model_version)
        return Step(entry=kept)  # a shadow prediction never completes a join by itself
    if isinstance(payload, Record):
        features = (payload.features, payload.event_time)
        kept.setdefault("t", payload.event_time)
        kept.setdefault("f", payload.features)
        if payload.label is not None:
            kept.update(l=payload.label)
    elif isinstance(payload, Prediction):
        features = (payload.features, payload.event_time)
        kept.update(
            t=payload.event_time,
            f=payload.features,
            p=payload.prediction,
            v=payload.model_version,
        )
    else:
        kept.update(l=payload.label)
    if "l" not in kept or "f" not in kept:
        return Step(entry=kept, features=features)
    example = Example(
        record_id=record_id,
        event_time=kept["t"],
        features=kept["f"],
        label=kept["l"],
        model_version=kept.get("v"),
        prediction=kept.get("p"),
    )
    outcome = shadow = None
    if "p" in kept:
        outcome = (kept["v"], kept["p"] == kept["l"], kept["t"])
        if "sp" in kept:
            shadow = (kept["sv"], kept["sp"] == kept["l"])
    return Step(entry=None, features=features, example=example, outcome=outcome, shadow=shadow)
