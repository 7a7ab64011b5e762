"""The pandas shortcut: an absent pandas still fails to import, and scikit-learn still works."""

from __future__ import annotations

import subprocess
import sys


def test_an_absent_pandas_fails_at_once_and_sklearn_still_predicts() -> None:
    code = """
import importlib.util, sys
import numpy as np
from shared.sklearn_speedups import skip_absent_pandas
from sklearn.impute import SimpleImputer
from sklearn.utils._missing import is_pandas_na
absent = importlib.util.find_spec("pandas") is None
assert skip_absent_pandas() is absent
try:
    import pandas  # noqa: F401
    assert not absent
except ImportError:
    assert absent and "pandas" not in sys.modules
assert is_pandas_na(np.nan) is False
if absent:
    assert importlib.util.find_spec("pandas") is None  # asked, not imported: no exception
imputer = SimpleImputer().fit([[1.0], [np.nan], [3.0]])
assert imputer.transform([[np.nan]])[0][0] == 2.0
"""
    subprocess.run([sys.executable, "-c", code], check=True)
