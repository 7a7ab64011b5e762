"""How ctloop's processes use CPython's cyclic garbage collector: the one place for it.

The services allocate several objects per record and hold large live sets (de-dup windows,
producer futures, the monitor's waiting joins, the trainer's example store), so the default
collector (a young collection every 700 allocations) costs them a measurable share of their CPU.
Reference counting frees almost everything anyway; the collector only finds cycles.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

SERVICE_YOUNG = 10_000
"""NOTE: with the default threshold (700) collections took ~20% of ingest's CPU."""

MONITOR_YOUNG = 50_000
"""NOTE: at 700 the monitor's young generation was collected every few dozen records, about
4 us of every record's ~25 us of the monitor's own work (benchmarks/RESULTS.md)."""


def tune_gc(young: int = SERVICE_YOUNG) -> None:
    """Fewer, cheaper collections for a long-running service: objects made at start-up are
    frozen out of the collector's scans, and the young generation is collected every `young`
    allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, 20, 100)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection in this process meanwhile (reference counting goes on).

    NOTE: the trainer holds its whole store of examples, about a million objects at 50,000 of
    them, and a full collection over them took ~115 ms; a run allocates enough to set one off,
    and did in one run of three in the benchmark. The trainer pauses collection while a run
    works and lets it happen while the run waits for its fit (`cyclic_gc_resumed`) or after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def cyclic_gc_resumed() -> Iterator[None]:
    """Collection allowed again inside `cyclic_gc_paused` (for a wait)."""
    if gc.isenabled():
        yield
        return
    gc.enable()
    try:
        yield
    finally:
        gc.disable()
