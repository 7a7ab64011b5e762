"""Holds the model being served and swaps it without a failed request.

A swap downloads the new version, verifies its digest, loads it under the skops allow-list,
checks that its input schema is compatible, warms it up, and only then flips the pointer
(MLServer's `_reload_model` pattern). Requests read the pointer once, so each is computed
entirely by one version, and the old one is released when the last request using it ends.
If any step fails, the old model keeps serving and the failure is reported.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Gauge, Histogram

from services.serving.model import LoadedModel
from shared.registry_api import ModelVersion
from shared.registry_client import RegistryClient
from shared.schema import DatasetSchema
from shared.serialization import load_model

log = logging.getLogger(__name__)

SWAPS = Counter("ctloop_serving_swaps_total", "Model swaps by outcome", ["outcome"])
SWAP_SECONDS = Histogram("ctloop_serving_swap_seconds", "Time from swap start to pointer flip")
MODEL_VERSION = Gauge("ctloop_serving_model_version", "Version being served (0: none)")


class SwapRefused(RuntimeError):
    """A new version could not be loaded; the old one stays."""


class ModelHolder:
    def __init__(self, schema: DatasetSchema, registry: RegistryClient) -> None:
        self.schema = schema
        self.registry = registry
        self.current: LoadedModel | None = None
        self.challenger: LoadedModel | None = None
        self._lock = threading.Lock()
        MODEL_VERSION.set(0)

    def _compatible(self, version: ModelVersion) -> None:
        theirs, ours = version.input_schema, self.schema
        if theirs.feature_names != ours.feature_names or theirs.label.classes != ours.label.classes:
            raise SwapRefused(
                f"v{version.version} expects features {theirs.feature_names} and classes "
                f"{theirs.label.classes}; this service takes {ours.feature_names}, {ours.label.classes}"
            )

    def _load(self, version: ModelVersion) -> LoadedModel:
        """Download, verify (digest and signature), load under the allow-list, check, warm up."""
        self._compatible(version)
        data = self.registry.artifact(self.schema.name, version)
        candidate = LoadedModel(version=version, pipeline=load_model(data, version.digest))  # type: ignore[arg-type]
        candidate.warm_up()
        return candidate

    def swap_to(self, version: ModelVersion, alias: str = "champion") -> float:
        """Load `version` and make it the champion (or the challenger); returns the seconds it took."""
        with self._lock:  # one swap at a time; requests never take this lock
            slot = self.current if alias == "champion" else self.challenger
            if slot is not None and slot.number == version.version:
                return 0.0
            start = time.perf_counter()
            try:
                candidate = self._load(version)
            except Exception as exc:
                SWAPS.labels("refused").inc()
                raise SwapRefused(f"v{version.version} refused: {exc}") from exc
            # NOTE: the flip; a single reference assignment is atomic
            if alias == "champion":
                self.current = candidate
                MODEL_VERSION.set(version.version)
                if self.challenger is not None and self.challenger.number == version.version:
                    self.challenger = None  # the challenger was promoted: nothing left to shadow
            else:
                self.challenger = candidate
            elapsed = time.perf_counter() - start
            SWAPS.labels("done").inc()
            SWAP_SECONDS.observe(elapsed)
            return elapsed

    def drop_challenger(self) -> None:
        self.challenger = None
