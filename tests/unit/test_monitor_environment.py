"""A monitor of another environment asks the registry about that environment's alias, rolls
back there, and has no challenger to fetch (the registry link's mapping, with a fake registry)."""

from __future__ import annotations

from typing import Any

from services.monitor.comparison import Underperformance
from services.monitor.registry_link import FetchReference, RegistryLink, Rollback
from shared.vocabulary import Alias


class _Registry:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def alias(self, name: str, alias: str) -> None:
        self.calls.append(("alias", name, alias))

    def rollback(self, name: str, reason: str, replaces: int, environment: str) -> None:
        self.calls.append(("rollback", name, replaces, environment))


def test_a_staging_monitor_follows_and_rolls_back_staging() -> None:
    registry = _Registry()
    link = RegistryLink(registry, "demo", lambda request, version: None, "staging")  # type: ignore[arg-type]
    link._call(FetchReference(Alias.CHAMPION))
    link._call(FetchReference(Alias.CHALLENGER))  # no challenger outside production: no call
    link._call(Rollback(Underperformance(4, 3, 0.6, 0.9, 0.001, 200)))
    assert registry.calls == [("alias", "demo", "staging"), ("rollback", "demo", 4, "staging")]


def test_production_keeps_champion_and_challenger() -> None:
    registry = _Registry()
    link = RegistryLink(registry, "demo", lambda request, version: None)  # type: ignore[arg-type]
    link._call(FetchReference(Alias.CHAMPION))
    link._call(FetchReference(Alias.CHALLENGER))
    assert registry.calls == [("alias", "demo", "champion"), ("alias", "demo", "challenger")]
