"""Holds the model being served and swaps it without a failed request.

A swap downloads the new version, verifies its digest, loads it under the skops allow-list,
checks that its input schema is compatible, warms it up, and only then flips the pointer
(MLServer's `_reload_model` pattern). Requests read the pointer once, so each is computed
entirely by one version, and the old one is released when the last request using it ends.
A champion replacing another must also pass a performance check on recent real rows
(services/serving/perf_check.py). If any step fails, the old model keeps serving and the
failure is reported. The last verified
champion is also kept on disk, so a restart while the registry is down still serves it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from services.serving.model import LoadedModel
from services.serving.perf_check import Budget, RecentRows, check
from shared.events import SwapCheck
from shared.registry_api import ModelVersion
from shared.registry_client import ModelVersions, check_signature
from shared.schema import DatasetSchema
from shared.serialization import load_model
from shared.vocabulary import Alias

log = logging.getLogger(__name__)

SWAPS = Counter("ctloop_serving_swaps_total", "Model swaps by outcome", ["outcome"])
SWAP_SECONDS = Histogram("ctloop_serving_swap_seconds", "Time from swap start to pointer flip")
MODEL_VERSION = Gauge("ctloop_serving_model_version", "Version being served (0: none)")


class SwapRefused(RuntimeError):
    """A new version could not be loaded, or failed its performance check; the old one stays."""

    def __init__(self, reason: str, check: SwapCheck | None = None) -> None:
        super().__init__(reason)
        self.check = check


@dataclass(frozen=True)
class Swap:
    """A swap done: how long it took, and the performance check's figures if one ran."""

    seconds: float
    check: SwapCheck | None = None
    load_seconds: float = 0.0
    """Of `seconds`: the download, verification, load and warm-up (the rest is the check)."""


class ModelHolder:
    def __init__(
        self,
        schema: DatasetSchema,
        registry: ModelVersions,
        cache_dir: Path | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.schema = schema
        self.registry = registry
        self.cache_dir = cache_dir
        self.budget = budget
        """The performance check's budget (None: no check)."""
        self.recent = RecentRows()
        """Rows recently served, which the performance check times both models on."""
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

    def _load(self, version: ModelVersion, data: bytes | None = None) -> tuple[LoadedModel, bytes]:
        """Download (unless given), verify digest and signature, load under the allow-list,
        check the schema, warm up."""
        self._compatible(version)
        if data is None:
            data = self.registry.artifact(self.schema.name, version)
        else:
            check_signature(self.registry.verifier, self.schema.name, version)
        candidate = LoadedModel(version=version, pipeline=load_model(data, version.digest))
        candidate.warm_up()
        return candidate, data

    def swap_to(self, version: ModelVersion, alias: Alias = Alias.CHAMPION) -> Swap:
        """Load `version` and make it the champion (or the challenger): how long it took, and
        the performance check's figures (a champion replacing another must pass it)."""
        with self._lock:  # one swap at a time; requests never take this lock
            slot = self.current if alias == Alias.CHAMPION else self.challenger
            if slot is not None and slot.number == version.version:
                return Swap(0.0)
            start = time.perf_counter()
            try:
                candidate, data = self._load(version)
            except Exception as exc:
                SWAPS.labels("refused").inc()
                raise SwapRefused(f"v{version.version} refused: {exc}") from exc
            loaded = time.perf_counter() - start
            figures = None
            if alias == Alias.CHAMPION and self.current is not None and self.budget is not None:
                rows = self.recent.sample(self.budget.rows) or [candidate.synthetic_row()]
                figures = check(self.current, candidate, rows, self.budget)
                if not figures.passed:
                    SWAPS.labels("refused").inc()
                    raise SwapRefused(
                        f"v{version.version} refused: p99 {figures.candidate_p99_ms:.3f} ms per row on "
                        f"{figures.rows} recent rows, v{self.current.number} takes "
                        f"{figures.current_p99_ms:.3f} ms (at most {figures.allowed_p99_ms:.3f} allowed)",
                        figures,
                    )
            # NOTE: the flip; a single reference assignment is atomic
            if alias == Alias.CHAMPION:
                self.current = candidate
                MODEL_VERSION.set(version.version)
                self._save_cache(version, data)
                if self.challenger is not None and self.challenger.number == version.version:
                    self.challenger = None  # the challenger was promoted: nothing left to shadow
            else:
                self.challenger = candidate
            elapsed = time.perf_counter() - start
            SWAPS.labels("done").inc()
            SWAP_SECONDS.observe(elapsed)
            return Swap(elapsed, figures, loaded)

    def drop_challenger(self) -> None:
        self.challenger = None

    # --- the on-disk cache of the last verified champion --------------------------------

    def _save_cache(self, version: ModelVersion, data: bytes) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for name, content in (
                ("artifact.skops", data),
                ("version.json", version.model_dump_json().encode()),
            ):
                temporary = self.cache_dir / f".{name}.tmp"
                temporary.write_bytes(content)
                temporary.replace(self.cache_dir / name)
        except OSError as exc:  # a cache that cannot be written must not fail a swap
            log.warning("could not cache v%d on disk: %s", version.version, exc)

    def load_cache(self) -> bool:
        """Serve the last verified champion from disk (the registry is unreachable at start-up).
        The cached bytes are verified again: digest, signature, allow-list."""
        if self.cache_dir is None or self.current is not None:
            return False
        try:
            version = ModelVersion.model_validate_json((self.cache_dir / "version.json").read_bytes())
            data = (self.cache_dir / "artifact.skops").read_bytes()
        except (OSError, ValueError):
            return False
        with self._lock:
            try:
                candidate, _ = self._load(version, data)
            except Exception as exc:
                log.error("cached model refused: %s", exc)
                return False
            self.current = candidate
            MODEL_VERSION.set(version.version)
        log.warning("registry unreachable: serving the cached v%d until it is back", version.version)
        return True
