"""Window policies: which observations each verdict sees, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.monitor.windows import Observation, Window, offsets

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def feed(window: Window, times: list[float]) -> list[list[int]]:
    """Observation i at T0 + times[i] seconds; the indices in each window that closes."""
    closed = []
    for i, t in enumerate(times):
        got = window.add(Observation({"i": i}, T0 + timedelta(seconds=t), ("records", 0, 100 + i)))
        if got is not None:
            closed.append([o.values["i"] for o in got])  # type: ignore[misc]
    return closed


def test_count_tumbling_windows_are_disjoint() -> None:
    assert feed(Window("count", size=4, min_size=1), list(range(10))) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_count_sliding_windows_overlap_and_advance_by_the_slide() -> None:
    closed = feed(Window("count", size=4, slide=2, min_size=1), list(range(9)))
    assert closed == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]


def test_time_tumbling_windows_follow_event_time() -> None:
    # one observation per second: [0, 10) closes when t=10 arrives, and so on
    closed = feed(Window("time", seconds=10, min_size=1), list(range(25)))
    assert closed == [list(range(10)), list(range(10, 20))]


def test_a_time_window_below_the_minimum_stays_open() -> None:
    # 3 observations in the first 10 s: the window stays open past 10 s until it holds 5,
    # and closes when the next observation comes; that one starts the next window
    times = [0, 4, 8, 12, 13, 14, 30]
    assert feed(Window("time", seconds=10, min_size=5), times) == [[0, 1, 2, 3, 4]]


def test_time_sliding_windows_keep_the_last_span_every_slide() -> None:
    closed = feed(Window("time", seconds=10, slide=5, min_size=1), list(range(21)))
    assert closed == [list(range(0, 6)), list(range(0, 11)), list(range(5, 16)), list(range(10, 21))]


def test_offsets_name_the_first_and_last_record_per_partition() -> None:
    observations = [
        Observation({}, T0, ("records", 0, 7)),
        Observation({}, T0, ("records", 1, 3)),
        Observation({}, T0, ("records", 0, 5)),
        Observation({}, T0, ("predictions", 0, 40)),
        Observation({}, T0),
    ]
    assert offsets(observations) == {"records/0": [5, 7], "records/1": [3, 3], "predictions/0": [40, 40]}
