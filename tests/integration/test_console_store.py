"""The console's history on both databases it supports, SQLite and a new PostgreSQL database:
written twice and kept once, read back by every query the pages make, still there after the
console reopens it (a restart)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.console import history
from services.console.store import ConsoleStore
from shared.events import DeadLetter, QualityMeasured
from shared.validation import FieldError
from tests.integration.conftest import postgres_database
from tests.unit.test_console import T0, a_loop, envelope, window

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'console.db'}"
        return
    with postgres_database() as database:
        yield database


def test_history_is_kept_once_read_by_every_page_query_and_survives_a_restart(url: str) -> None:
    letter = DeadLetter.of("ctloop.raw.v1", [FieldError(index=0, field="x1", reason="not a number")], "{}")
    measured = QualityMeasured(
        model_name="demo", model_version=2, labelled=10, correct=9, first_event_time=T0, last_event_time=T0
    )
    events = [
        *a_loop(),
        window(10, 0.3, drifted=True),
        window(20, 0.05),
        envelope(letter, 30, "d"),
        envelope(measured, 40, "q"),
    ]
    store = ConsoleStore(url)
    store.add(events)
    store.add(events)  # a batch read again after a restart or rebalance
    store.record_action("token:abc", "rollback", "Roll back", "because", "done")
    store.close()

    store = ConsoleStore(url)  # the console restarted
    try:
        ids, total = store.loop_ids(0, 50)
        assert total == 1 and ids == ["drift-1"]
        assert len(store.loop_events(ids)) == 6
        (loop,) = history.loops(store.loop_events(ids))
        assert loop.outcome == "v2 serving"
        series = history.feature_series(store.feature_series("feature", 500))
        assert [s.feature for s in series] == ["x1", "color"]
        assert series[0].effect == [0.3, 0.05] and series[0].times_drifted == 1 and series[0].windows == 2
        merged = history.feature_series(store.feature_series("feature", 1))  # both windows in one point
        assert merged[0].effect == [0.3] and merged[0].adjusted_p == [0.002] and merged[0].windows == 2
        assert len(store.windows_list(10)) == 2 and len(store.windows_list(10, drifted_only=True)) == 1
        assert [r.correct for r in store.quality_since(0)] == [9]
        assert len(store.latest_dead_letters(10)) == 1
        ((_, origin, count),) = store.dead_letter_counts(0, 300)
        assert (origin, count) == ("ctloop.raw.v1", 1)
        assert store.dead_letter_reasons(5)[0].n == 1
        assert store.recent_actions(5)[0].reason == "because"
        assert store.prune_dead_letters(keep=0) == 1 and not store.latest_dead_letters(10)
    finally:
        store.close()
