"""The swap's performance check with real models: a forest ten times slower per row than a
logistic regression fails it, a model as fast as the current one passes, a model of another
named estimator is held to the fixed budget instead, and the budget's arithmetic is what the
settings say."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from services.serving.model import LoadedModel
from services.serving.perf_check import Budget, RecentRows, check
from shared.registry_api import GateReport, Lineage, ModelVersion
from shared.validation import check_features
from tests.fixtures import demo_examples, demo_rows, demo_schema, tiny_pipeline


def loaded(
    number: int, estimator: str, params: dict[str, object] | None = None, named: bool = False
) -> LoadedModel:
    """A fitted model; `named`: its version names its estimator, as the trainer's do."""
    schema = demo_schema()
    examples = demo_examples(300, seed=number)
    version = ModelVersion(
        name="demo",
        version=number,
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        digest="sha256:" + "0" * 64,
        input_schema=schema,
        gate_report=GateReport(passed=True, gates=[]),
        lineage=Lineage(run_id=f"run-{number}", trigger="manual"),
        estimator=estimator if named else "",
    )
    return LoadedModel(version=version, pipeline=tiny_pipeline(schema, examples, estimator, params))


ROWS = [check_features(demo_schema(), r) for r in demo_rows(16, seed=9)]
BUDGET = Budget(ratio=2.0, slack_ms=2.0, rows=16)


def test_a_much_slower_model_fails_and_one_as_fast_passes() -> None:
    current = loaded(1, "sklearn.linear_model.LogisticRegression")
    forest = loaded(2, "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 300, "random_state": 0})
    slow = check(current, forest, ROWS, BUDGET)
    assert not slow.passed and slow.candidate_p99_ms > slow.allowed_p99_ms
    assert slow.rows == 16 and slow.current_version == 1
    same = check(current, loaded(3, "sklearn.linear_model.LogisticRegression"), ROWS, BUDGET)
    assert same.passed, same


class _Hiccup:
    """A model as fast as another, but whose first `slow_calls` predictions stall (a loaded
    machine, a collection in another thread): the check's first pass sees a slow model."""

    def __init__(self, model: LoadedModel, slow_calls: int) -> None:
        self.model, self.number, self.calls, self.slow_calls = model, model.number, 0, slow_calls
        self.version = model.version

    def predict(self, rows: list[dict[str, object]]) -> object:
        self.calls += 1
        if self.calls <= self.slow_calls:
            time.sleep(0.03)
        return self.model.predict(rows)


def test_a_refusal_is_confirmed_by_more_passes_before_it_stands() -> None:
    current = loaded(1, "sklearn.linear_model.LogisticRegression")
    stalled = _Hiccup(loaded(2, "sklearn.linear_model.LogisticRegression"), slow_calls=17)  # a first pass
    assert check(current, stalled, ROWS, BUDGET).passed  # type: ignore[arg-type]
    always = _Hiccup(loaded(3, "sklearn.linear_model.LogisticRegression"), slow_calls=10**6)
    refused = check(current, always, ROWS, BUDGET)  # type: ignore[arg-type]
    assert not refused.passed and refused.candidate_p99_ms >= 30
    assert always.calls == 1 + 3 * len(ROWS)  # the warm-up, then three passes before refusing


def test_a_model_of_another_estimator_is_held_to_the_fixed_budget() -> None:
    current = loaded(1, "sklearn.linear_model.LogisticRegression", named=True)
    forest = loaded(
        2, "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 300, "random_state": 0}, named=True
    )
    generous = check(current, forest, ROWS, Budget(ratio=2.0, slack_ms=0.0, other_estimator_ms=10_000))
    assert generous.passed and generous.estimator_changed and generous.allowed_p99_ms == 10_000
    assert generous.candidate_p99_ms > 2 * generous.current_p99_ms  # the ratio would have refused it
    strict = check(current, forest, ROWS, Budget(ratio=2.0, slack_ms=0.0, other_estimator_ms=0.001))
    assert not strict.passed and strict.allowed_p99_ms == 0.001
    again = loaded(3, "sklearn.linear_model.LogisticRegression", named=True)
    same = check(current, again, ROWS, Budget(ratio=2.0, slack_ms=2.0, other_estimator_ms=0.001))
    assert same.passed and not same.estimator_changed  # the same estimator: the ratio applies
    unnamed = loaded(4, "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 300, "random_state": 0})
    unknown = check(current, unnamed, ROWS, Budget(ratio=2.0, slack_ms=0.0, other_estimator_ms=10_000))
    assert not unknown.passed and not unknown.estimator_changed  # no name: the stricter ratio


def test_the_budget_is_a_ratio_plus_a_slack() -> None:
    assert Budget(ratio=1.5, slack_ms=2.0).allowed_ms(4.0) == 8.0


def test_recent_rows_keep_the_newest() -> None:
    recent = RecentRows(size=3)
    recent.add([{"a": 1.0}, {"a": 2.0}])
    recent.add([{"a": 3.0}, {"a": 4.0}])
    assert recent.sample(2) == [{"a": 3.0}, {"a": 4.0}] and len(recent.sample(10)) == 3
