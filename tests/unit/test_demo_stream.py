"""The demo's streams change what they say they change, where they say, and nothing else."""

from __future__ import annotations

import statistics

import pytest

from services.demo.stream import STREAM_KINDS, ConceptStream


def window(kind: str, low: int, high: int, drift_at: int = 2000) -> list[tuple[dict[str, float], int]]:
    pairs = list(ConceptStream(seed=3, drift_at=drift_at, kind=kind, width=2000, period=1000).take(high))  # type: ignore[arg-type]
    return [(r["features"], y) for r, y in pairs[low:high]]


def old_rule_share(pairs: list[tuple[dict[str, float], int]]) -> float:
    """How many labels follow x1 + x2 > 0 (the rule before any change) where the new rule,
    x1 - x2 > 0, says otherwise (elsewhere both agree)."""
    split = [(x, y) for x, y in pairs if (x["x1"] + x["x2"] > 0) != (x["x1"] - x["x2"] > 0)]
    return statistics.mean(int(x["x1"] + x["x2"] > 0) == y for x, y in split)


def test_the_abrupt_stream_changes_rule_and_x3_at_the_drift() -> None:
    assert old_rule_share(window("abrupt", 0, 2000)) > 0.9
    after = window("abrupt", 2000, 4000)
    assert old_rule_share(after) < 0.1
    assert statistics.mean(x["x3"] for x, _ in after) == pytest.approx(1.0, abs=0.1)


def test_noise_is_ten_percent_on_the_noisy_stream() -> None:
    assert old_rule_share(window("noisy", 0, 2000)) == pytest.approx(0.90, abs=0.03)
    assert old_rule_share(window("abrupt", 0, 2000)) == pytest.approx(0.97, abs=0.03)


def test_a_gradual_change_mixes_the_rules_in_proportion() -> None:
    # width 2,000 from record 2,000: the middle 500 follow the new rule about half the time
    middle = window("gradual", 2750, 3250)
    assert 0.35 < old_rule_share(middle) < 0.65
    assert old_rule_share(window("gradual", 4000, 5000)) < 0.1  # all new from 4,000


def test_a_recurring_concept_comes_back() -> None:
    assert old_rule_share(window("recurring", 2000, 3000)) < 0.1
    assert old_rule_share(window("recurring", 3000, 4000)) > 0.9
    assert old_rule_share(window("recurring", 4000, 5000)) < 0.1
    assert ConceptStream(kind="recurring", drift_at=2000, period=1000).changes(5000) == [2000, 3000, 4000]


@pytest.mark.parametrize("kind", ["covariate", "harmful-covariate", "stationary"])
def test_the_concept_never_changes_where_only_inputs_shift(kind: str) -> None:
    assert old_rule_share(window(kind, 2000, 4000)) > 0.9


def test_covariate_shifts_move_the_inputs() -> None:
    before, after = window("covariate", 0, 2000), window("covariate", 2000, 4000)
    assert statistics.mean(x["x1"] for x, _ in after) - statistics.mean(x["x1"] for x, _ in before) > 1.3
    harmful = window("harmful-covariate", 2000, 4000)
    assert statistics.stdev(x["x2"] for x, _ in harmful) == pytest.approx(0.25, abs=0.03)


def test_changes_name_every_change_point_and_none_for_a_stationary_stream() -> None:
    assert ConceptStream(kind="gradual", drift_at=10, width=5).changes(100) == [10, 15]
    assert ConceptStream(kind="stationary", drift_at=10).changes(100) == []
    assert all(ConceptStream(kind=kind, drift_at=500).changes(100) == [] for kind in STREAM_KINDS)


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown stream kind 'sudden'"):
        ConceptStream(kind="sudden")  # type: ignore[arg-type]
