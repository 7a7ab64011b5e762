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


def test_on_a_python_whose_importlib_differs_the_short_cut_removes_itself() -> None:
    # Simulated: the finder can no longer tell the import statement from find_spec (here it
    # refuses both), so the self-check fails and imports stay as they were: correct, not fast.
    code = """
import importlib.util, sys
from shared import sklearn_speedups
if importlib.util.find_spec("pandas") is None:
    def refuse_always(self, fullname, path, target=None):
        if fullname == self.name:
            raise ModuleNotFoundError(fullname, name=fullname)
    sklearn_speedups._Absent.find_spec = refuse_always
    assert sklearn_speedups.skip_absent_pandas() is False
    assert not any(isinstance(f, sklearn_speedups._Absent) for f in sys.meta_path)
    assert importlib.util.find_spec("pandas") is None
"""
    subprocess.run([sys.executable, "-c", code], check=True)
