"""Fixtures of the trainer's unit tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from services.trainer.fitting import FitProcess


@pytest.fixture(scope="module")
def fitter() -> Iterator[FitProcess]:
    """One fit process for a module's runs (a Trainer starts its own)."""
    process = FitProcess(threads=1, timeout_s=120)
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _no_threads_left() -> Iterator[None]:
    before = threading.active_count()
    yield
    assert threading.active_count() <= before + 1
