"""Moves versions into the environments whose rule is `after`: once a version has been in the
previous environment for the rule's time, and has made the rule's number of labelled
predictions there (as that environment's monitor measured: `evidence.py`), without being rolled
back there and without a drift alarm from that environment's monitor while it served there, it
is promoted (and on into the environments after it whose rule is `auto`).

Only forward: a version older than the one the environment holds is never pushed into it (a
rollback in the previous environment does not roll this one back). The change is conditional on
what the environment held when looked at, so two registry replicas running this worker make
one promotion and one refused attempt.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from prometheus_client import Counter

from services.registry.environments import Environments, Stage
from services.registry.store import RegistryStore, StoreConflict

log = logging.getLogger(__name__)

AFTER_PROMOTIONS = Counter(
    "ctloop_registry_after_promotions_total", "Versions an `after` rule moved on", ["environment"]
)


def reason(stage: Stage) -> str:
    """What the history says about a move by `stage`'s rule."""
    previous = stage.previous.name if stage.previous else "?"
    held = [f"{stage.after_s:g} s"] if stage.after_s or not stage.after_labelled else []
    held += [f"{stage.after_labelled} labelled predictions"] if stage.after_labelled else []
    return f"after: {' and '.join(held)} in {previous} without a rollback or alarm"


class AfterRule:
    """A supervised worker (`shared.supervision`)."""

    name = "after-rule"

    def __init__(self, store: RegistryStore, environments: Environments, interval_s: float) -> None:
        self.store = store
        self.environments = environments
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def due(self, name: str, stage: Stage, now: datetime) -> tuple[int, int | None] | None:
        """(version to promote, version it replaces) when `stage`'s rule lets one in now."""
        assert stage.previous is not None  # settings refuse `after` for the first environment
        entered = self.store.alias_since(name, stage.previous.alias)
        if entered is None:
            return None
        version, since = entered
        held = self.store.alias_since(name, stage.alias)
        current = held[0] if held else None
        if current is not None and version <= current:
            return None
        if (now - since).total_seconds() < stage.after_s or self.store.rolled_back(
            name, stage.alias, version
        ):
            return None
        if self.store.alarms(name, stage.previous.name, version):
            return None  # an operator can still promote it (with a reason) if the alarm is benign
        labelled = stage.after_labelled
        if labelled and self.store.labelled(name, stage.previous.name, version) < labelled:
            return None
        return version, current

    def check_once(self) -> int:
        """Promote every version that is due; how many moved."""
        moved = 0
        now = datetime.now(UTC)
        for model in self.store.models():
            for stage in self.environments.after_rules():
                found = self.due(model.name, stage, now)
                if found is None:
                    continue
                version, replaces = found
                try:
                    self.store.promote(
                        model.name,
                        version,
                        stage.alias,
                        reason(stage),
                        replaces=replaces,
                        cascade=self.environments.following(stage, has_champion=True),
                        actor="registry",
                    )
                except StoreConflict as exc:  # another replica (or a person) moved it first
                    log.info("after rule: %s v%d not moved to %s: %s", model.name, version, stage.name, exc)
                    continue
                AFTER_PROMOTIONS.labels(stage.name).inc()
                log.info("after rule: %s v%d entered %s", model.name, version, stage.name)
                moved += 1
        return moved

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.check_once()

    def stop(self) -> None:
        self._stop_event.set()
