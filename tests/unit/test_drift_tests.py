"""Each drift test against scipy or hand-computed values, and the contract every test keeps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from services.monitor.drift_tests import CATEGORICAL, NUMERIC, DriftTest
from services.monitor.drift_tests.chi2 import merge_sparse
from services.monitor.drift_tests.psi import numeric_counts

RNG = np.random.default_rng(11)
REF_NUM = RNG.normal(size=1000).tolist()
SAME_NUM = RNG.normal(size=500).tolist()
SHIFTED_NUM = RNG.normal(0.8, 1.0, size=500).tolist()
CATS = ["a", "b", "c", "d"]
REF_CAT = RNG.choice(CATS, p=[0.4, 0.3, 0.2, 0.1], size=1000).tolist()
SAME_CAT = RNG.choice(CATS, p=[0.4, 0.3, 0.2, 0.1], size=500).tolist()
SHIFTED_CAT = RNG.choice(CATS, p=[0.1, 0.2, 0.3, 0.4], size=500).tolist()

CASES = [(t, REF_NUM, SAME_NUM, SHIFTED_NUM) for t in NUMERIC.values()] + [
    (t, REF_CAT, SAME_CAT, SHIFTED_CAT) for t in CATEGORICAL.values()
]
IDS = [f"numeric-{n}" for n in NUMERIC] + [f"categorical-{n}" for n in CATEGORICAL]


@pytest.mark.parametrize(("test", "reference", "same", "shifted"), CASES, ids=IDS)
def test_every_test_keeps_the_contract(
    test: DriftTest, reference: list[object], same: list[object], shifted: list[object]
) -> None:
    quiet, loud = test(reference, same), test(reference, shifted)
    assert quiet.test == loud.test == test.name
    assert quiet.p_value > 0.01 and quiet.effect < 0.1  # same distribution: no evidence, small effect
    assert loud.p_value < 1e-6 and loud.effect >= 0.1  # a real shift: both significant and large
    assert test(reference, []).p_value == 1.0 and test([], shifted).effect == 0.0
    with_missing = test([*reference, None], [None, *shifted])
    assert with_missing == loud  # missing values are ignored, not counted
    assert test(reference, shifted) == loud  # deterministic


def test_wasserstein_by_hand_and_scipy() -> None:
    result = NUMERIC["wasserstein"]([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0])
    assert result.statistic == pytest.approx(1.0)  # every unit of mass moved by 1
    assert result.effect == pytest.approx(1.0 / 0.5)  # reference sd 0.5
    expected = stats.wasserstein_distance(REF_NUM, SHIFTED_NUM)
    assert NUMERIC["wasserstein"](REF_NUM, SHIFTED_NUM).statistic == pytest.approx(expected)
    assert NUMERIC["wasserstein"](REF_NUM, SHIFTED_NUM).p_value == pytest.approx(
        stats.ks_2samp(REF_NUM, SHIFTED_NUM, method="asymp").pvalue
    )


def test_psi_by_hand() -> None:
    # categorical: 50/50 -> 80/20: 0.3 ln(1.6) + (-0.3) ln(0.4)
    result = CATEGORICAL["psi"](["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20)
    assert result.effect == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4))
    assert result.p_value == pytest.approx(stats.chi2.sf(result.effect / (1 / 100 + 1 / 100), 1))
    # numeric: bins cut at the reference's deciles hold a tenth of the reference each
    ref, cur = numeric_counts(np.asarray(REF_NUM), np.asarray(SAME_NUM))
    assert len(ref) == 10 and all(count == 100 for count in ref) and cur.sum() == 500


def test_psi_p_value_is_calibrated_under_no_drift() -> None:
    rng = np.random.default_rng(5)
    p_values = [
        NUMERIC["psi"](rng.normal(size=1000).tolist(), rng.normal(size=500).tolist()).p_value
        for _ in range(300)
    ]
    assert 0.01 <= np.mean(np.asarray(p_values) < 0.05) <= 0.10  # about 5% false positives


def test_jensen_shannon_against_scipy_and_the_g_test() -> None:
    result = CATEGORICAL["jensen_shannon"](["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20)
    assert result.effect == pytest.approx(jensenshannon([0.5, 0.5], [0.8, 0.2], base=2))
    # G = 2 * N * (sample-size-weighted JS divergence, in nats)
    p, q, n = np.array([0.5, 0.5]), np.array([0.8, 0.2]), 200
    m = (p + q) / 2
    divergence = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert result.statistic == pytest.approx(2 * n * divergence)
    assert result.p_value == pytest.approx(stats.chi2.sf(2 * n * divergence, 1))


def test_sparse_categories_are_merged_until_expected_counts_reach_five() -> None:
    # column totals 750, 600, 18, 12, 9; the smaller row holds a third: 9 and 12 expect 3 and 4
    table = np.array([[500.0, 400.0, 12.0, 8.0, 6.0], [250.0, 200.0, 6.0, 4.0, 3.0]])
    merged = merge_sparse(table)
    expected = merged.sum(axis=1, keepdims=True) * merged.sum(axis=0) / merged.sum()
    assert sorted(merged.sum(axis=0)) == [18, 21, 600, 750]  # the two rarest became one
    assert expected.min() >= 5 and merged.sum() == table.sum()
    # a category never seen in the reference still shows up as drift
    new = CATEGORICAL["chi2"](["a", "b"] * 500, ["a", "b"] * 200 + ["z"] * 100)
    assert new.p_value < 1e-10 and new.effect > 0.1
