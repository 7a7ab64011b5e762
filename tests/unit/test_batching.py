"""Micro-batching: concurrent requests share predict calls, each gets exactly its own rows'
results, and requests for different versions are never mixed in one call."""

from __future__ import annotations

import threading
import time

from services.serving.batching import MicroBatcher


class _Model:
    """Echoes each row's `n` as its class; slow enough that requests pile up meanwhile."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls: list[int] = []

    def predict(self, rows: list[dict[str, object]]) -> tuple[list[object], list[dict[str, float]]]:
        self.calls.append(len(rows))
        time.sleep(0.005)
        return [f"{self.tag}{r['n']}" for r in rows], [{"p": float(r["n"])} for r in rows]  # type: ignore[arg-type]


def test_concurrent_requests_share_calls_and_get_their_own_results() -> None:
    batcher = MicroBatcher(max_rows=64)
    batcher.start()
    model, results, errors = _Model("a"), {}, []

    def request(i: int) -> None:
        try:
            results[i] = batcher.predict(model, [{"n": i}, {"n": i + 1000}])  # type: ignore[arg-type]
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.stop()
    assert not errors
    assert all(results[i] == ([f"a{i}", f"a{i + 1000}"], [{"p": i}, {"p": i + 1000}]) for i in range(32))
    assert sum(model.calls) == 64 and len(model.calls) < 32 and max(model.calls) <= 64


def test_versions_are_never_mixed() -> None:
    batcher = MicroBatcher(max_rows=64)
    batcher.start()
    old, new = _Model("old"), _Model("new")
    results: dict[int, object] = {}
    threads = [
        threading.Thread(
            target=lambda i=i: results.__setitem__(i, batcher.predict(old if i % 2 else new, [{"n": i}]))
        )
        for i in range(20)
    ]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i][0] == [f"{'old' if i % 2 else 'new'}{i}"] for i in range(20))  # type: ignore[index]
    batcher.stop()


def test_an_error_reaches_every_request_of_the_batch() -> None:
    class _Broken(_Model):
        def predict(self, rows: list[dict[str, object]]) -> tuple[list[object], list[dict[str, float]]]:
            raise ValueError("model exploded")

    batcher = MicroBatcher()
    batcher.start()
    try:
        batcher.predict(_Broken("x"), [{"n": 1}])  # type: ignore[arg-type]
        raise AssertionError("expected the model's error")
    except ValueError as exc:
        assert "exploded" in str(exc)
    batcher.stop()
