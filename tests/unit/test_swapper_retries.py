"""Serving's swapper tries a version the performance check refused (or the registry did not
hand over) again, sooner than the registry's reconcile would, and a bounded number of times
(`services.serving.swapper`)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from services.serving.holder import SwapRefused
from services.serving.swapper import CHECK_RETRIES, Swapper
from shared.events import ModelSwapFailed, ModelSwapped, SwapCheck
from shared.registry_client import RegistryError

SLOW = SwapCheck(
    rows=8, current_version=1, current_p99_ms=2.4, candidate_p99_ms=42.7, allowed_p99_ms=25.0, passed=False
)


class Holder:
    """Serves v1; the registry's champion is v2; the check refuses v2 `refusals` times."""

    def __init__(self, refusals: int, check: SwapCheck | None = SLOW) -> None:
        self.schema = SimpleNamespace(name="credit")
        self.current = SimpleNamespace(number=1)
        self.challenger = None
        self.registry = SimpleNamespace(alias=self.alias)
        self.refusals, self.check, self.attempts = refusals, check, 0

    def alias(self, name: str, alias: str = "champion") -> object:
        if alias != "champion":
            return None
        return SimpleNamespace(version=2, lineage=SimpleNamespace(correlation_id="loop-1"))

    def swap_to(self, version: SimpleNamespace, slot: str) -> object:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise SwapRefused("v2 refused: too slow", self.check)
        self.current = SimpleNamespace(number=version.version)
        return SimpleNamespace(seconds=0.01, load_seconds=0.005, check=None)

    def drop_challenger(self) -> None:
        pass


class Publisher:
    def __init__(self) -> None:
        self.kinds: list[type] = []

    def publish(self, topic: str, payload: object, **_: object) -> None:
        self.kinds.append(type(payload))


def running(swapper: Swapper) -> threading.Thread:
    thread = threading.Thread(target=swapper.run, daemon=True)
    thread.start()
    return thread


def test_a_version_the_check_refused_is_tried_again_until_it_passes() -> None:
    holder, publisher = Holder(refusals=2), Publisher()
    # The reconcile asks the registry every 15 x retry_s (15 s here): well after the retries.
    swapper = Swapper(holder, publisher, retry_s=1.0)  # type: ignore[arg-type]
    thread = running(swapper)
    deadline = time.monotonic() + 12  # retries after 1 s and 2 s
    while holder.current.number != 2:
        assert time.monotonic() < deadline, f"not swapped after {holder.attempts} attempts"
        time.sleep(0.02)
    swapper.stop()
    thread.join(10)
    assert holder.attempts == 3
    assert publisher.kinds == [ModelSwapFailed, ModelSwapFailed, ModelSwapped]
    assert swapper._retries == {}


def test_retries_are_bounded_and_spaced_and_not_for_a_version_that_does_not_load() -> None:
    swapper = Swapper(Holder(refusals=99), Publisher(), retry_s=1.0)  # type: ignore[arg-type]
    delays = []
    for _ in range(CHECK_RETRIES):
        before = time.monotonic()
        swapper._swap("champion", 2, None)
        delays.append(round(swapper._retries["champion"].due - before))
    assert delays == [2**i for i in range(CHECK_RETRIES)]  # 1, 2, 4, 8 s
    swapper._swap("champion", 2, None)
    assert "champion" not in swapper._retries  # then the registry's reconcile takes over

    failed_load = Swapper(Holder(refusals=99, check=None), Publisher(), retry_s=1.0)  # type: ignore[arg-type]
    failed_load._swap("champion", 2, None)
    assert failed_load._retries == {}  # a version that does not load is not tried again early

    unreachable = Swapper(Holder(refusals=0), Publisher(), retry_s=1.0)  # type: ignore[arg-type]
    unreachable.holder.registry = SimpleNamespace(alias=no_registry)  # type: ignore[attr-defined]
    unreachable._swap("champion", 2, None)
    assert unreachable._retries["champion"].attempts == 1  # the registry may answer in a moment


def no_registry(name: str, alias: str = "champion") -> object:
    raise RegistryError("registry not reachable")
