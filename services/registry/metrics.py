"""The registry's view of what should serve, for Prometheus: each model's alias targets, read
from the store at every scrape (so every replica reports the same, current state, and an alert
can compare it with the version serving reports)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.registry.store import RegistryStore


class AliasCollector(Collector):
    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ctloop_registry_alias_version",
            "The version each alias of each model points at",
            labels=["model", "alias"],
        )
        for model in self.store.models():
            for alias, version in model.aliases.items():
                family.add_metric([model.name, alias], version)
        yield family
