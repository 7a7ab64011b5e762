"""The drift statistics against scipy and hand-computed values, and seeded detection points.
(The per-feature tests: tests/unit/test_drift_tests.py.)"""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from services.monitor.detectors import PageHinkley
from services.monitor.drift_tests import CATEGORICAL, NUMERIC
from services.monitor.stats import benjamini_hochberg, proportion_drop
from shared.changepoint import change_point, split_p_value

ks_numeric, chi2_categorical = NUMERIC["ks"], CATEGORICAL["chi2"]


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3, 0.8])
def test_ks_matches_scipy(shift: float) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=1000), rng.normal(shift, size=500)
    # and with ties: a coarse feature has many equal values
    for ref, cur in ((a, b), (np.round(a, 1), np.round(b, 1))):
        expected = stats.ks_2samp(ref, cur, method="asymp")  # the p-value the monitor uses
        result = ks_numeric(ref.tolist(), cur.tolist())
        assert result.statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert result.effect == result.statistic
        # scipy's default at these sizes, the exact p-value, is within a few percent of it
        assert result.p_value == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=0.1, abs=1e-12)


def test_ks_ignores_missing_values_and_handles_empty() -> None:
    assert ks_numeric([1.0, float("nan"), 2.0], [1.0, 2.0]).p_value == pytest.approx(1.0)
    assert ks_numeric([], [1.0]).p_value == 1.0


def test_chi2_by_hand() -> None:
    # reference: a=30 b=70, current: a=60 b=40 -> 2x2 table, chi2 without Yates correction
    reference = ["a"] * 30 + ["b"] * 70
    current = ["a"] * 60 + ["b"] * 40
    result = chi2_categorical(reference, current)
    table = np.array([[30, 70], [60, 40]])
    expected = (table.sum(1)[:, None] * table.sum(0)[None, :]) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert result.statistic == pytest.approx(chi2)
    assert result.p_value == pytest.approx(stats.chi2.sf(chi2, 1))
    assert result.effect == pytest.approx(np.sqrt(chi2 / 200))


def test_chi2_sparse_categories_and_degenerate_cases() -> None:
    # A category absent from both samples must not produce a zero column (division by zero).
    assert chi2_categorical(["a", "b"] * 50, ["a", "b"] * 50).p_value == pytest.approx(1.0)
    assert chi2_categorical(["a"] * 10, ["a"] * 10).p_value == 1.0
    new_category = chi2_categorical(["a", "b"] * 50, ["c"] * 100)
    assert new_category.p_value < 1e-10 and new_category.effect > 0.9


def test_benjamini_hochberg_decides_as_scipy_does() -> None:
    rng = np.random.default_rng(11)
    for _ in range(2000):
        m = int(rng.integers(1, 12))
        # a mix of tiny, moderate and null p-values, with ties, as drift tests give them
        p = np.round(rng.choice([1e-4, 0.01, 0.5], size=m) * rng.random(m), 3).clip(0, 1)
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        expected = (stats.false_discovery_control(p) <= alpha).tolist()
        assert benjamini_hochberg(p.tolist(), alpha) == expected, (p.tolist(), alpha)


def test_benjamini_hochberg_by_hand() -> None:
    # m=5, alpha=0.05: thresholds 0.01 0.02 0.03 0.04 0.05; sorted p 0.005 0.011 0.035 0.039 0.2
    # largest k with p_(k) <= k*alpha/m is k=4 (0.039 <= 0.04): the first four are rejected.
    assert benjamini_hochberg([0.2, 0.039, 0.005, 0.035, 0.011], 0.05) == [False, True, True, True, True]
    assert benjamini_hochberg([0.02, 0.03], 0.01) == [False, False]
    assert benjamini_hochberg([], 0.05) == []


def test_proportion_drop() -> None:
    assert proportion_drop(0.9, 90, 100) == pytest.approx(0.5)
    assert proportion_drop(0.9, 60, 100) < 1e-10
    assert proportion_drop(0.9, 0, 0) == 1.0


def test_page_hinkley_pinned_detection_points() -> None:
    rng = random.Random(42)
    ph = PageHinkley(delta=0.05, threshold=15.0, min_samples=30)
    stream = [float(rng.random() < (0.1 if i < 2000 else 0.5)) for i in range(3000)]
    fired = [i for i, x in enumerate(stream) if ph.update(x, i)]
    assert fired[0] == 2050  # pinned: 50 samples after the change, none before it


def test_page_hinkley_quiet_on_a_stationary_stream() -> None:
    rng = random.Random(7)
    ph = PageHinkley(delta=0.05, threshold=15.0, min_samples=30)
    assert not any(ph.update(float(rng.random() < 0.1), i) for i in range(50_000))


def test_change_point_finds_the_split() -> None:
    rng = random.Random(3)
    errors = [float(rng.random() < (0.08 if i < 700 else 0.5)) for i in range(1000)]
    k = change_point(errors)
    assert 690 <= k <= 710
    assert split_p_value(errors, k) < 1e-10
    stationary = [float(rng.random() < 0.1) for _ in range(1000)]
    assert split_p_value(stationary, change_point(stationary)) > 1e-3
