"""Follows the registry: loads the champion at start-up (retrying while the registry is not
there yet) and swaps to every newly promoted champion announced on `models`."""

from __future__ import annotations

import logging
import threading
import time

from kafka.consumer.fetcher import ConsumerRecord

from services.serving.holder import ModelHolder, SwapRefused
from shared import topics
from shared.events import Envelope, ModelChanged, ModelSwapped
from shared.kafka import EventPublisher, decoded
from shared.registry_client import RegistryError

log = logging.getLogger(__name__)


class Swapper(threading.Thread):
    def __init__(self, holder: ModelHolder, publisher: EventPublisher, retry_s: float) -> None:
        super().__init__(name="swapper", daemon=True)
        self.holder = holder
        self.publisher = publisher
        self.retry_s = retry_s
        self._wanted: tuple[int, Envelope | None] | None = None
        self._wake = threading.Condition()
        self._stop = False

    def handle(self, messages: list[ConsumerRecord]) -> None:
        """Consume-loop handler: remember the newest promoted champion; the thread swaps."""
        for _, event, payload in decoded(messages, self.publisher):
            if (
                event.type == "model.promoted"
                and isinstance(payload, ModelChanged)
                and payload.alias == "champion"
                and payload.model_name == self.holder.schema.name
            ):
                with self._wake:
                    self._wanted = (payload.version, event)
                    self._wake.notify()

    def run(self) -> None:
        last_check = -1e9
        while not self._stop:
            with self._wake:
                # NOTE: events are the main path; asking the registry now and then also covers
                # the start-up (no model yet) and a promotion made before this consumer joined.
                interval = self.retry_s if self.holder.current is None else 15 * self.retry_s
                if self._wanted is None and time.monotonic() - last_check >= interval:
                    last_check = time.monotonic()
                    self._reconcile()
                wanted, self._wanted = self._wanted, None
                if wanted is None:
                    self._wake.wait(self.retry_s)
                    continue
            self._swap(*wanted)

    def _reconcile(self) -> None:
        try:
            champion = self.holder.registry.alias(self.holder.schema.name, "champion")
        except RegistryError as exc:
            log.info("registry not reachable: %s", exc)
            return
        current = self.holder.current
        if champion is not None and (current is None or current.number != champion.version):
            self._wanted = (champion.version, None)

    def _swap(self, number: int, cause: Envelope | None) -> None:
        current = self.holder.current
        if current is not None and current.number == number:
            return
        previous = current.number if current else None
        try:
            version = self.holder.registry.version(self.holder.schema.name, number)
            if version is None:
                raise SwapRefused(f"v{number} is not in the registry")
            seconds = self.holder.swap_to(version)
        except (SwapRefused, RegistryError) as exc:
            log.error("swap to v%d refused, v%s keeps serving: %s", number, previous, exc)
            self._report("model.swap_failed", number, previous, 0.0, cause, str(exc))
            return
        log.info("swapped v%s -> v%d in %.0f ms", previous, number, seconds * 1000)
        self._report("model.swapped", number, previous, seconds * 1000, cause, None)

    def _report(
        self,
        event_type: str,
        number: int,
        previous: int | None,
        ms: float,
        cause: Envelope | None,
        reason: str | None,
    ) -> None:
        payload = ModelSwapped(
            model_name=self.holder.schema.name,
            version=number,
            previous_version=previous,
            duration_ms=ms,
            reason=reason,
        )
        self.publisher.publish(topics.MODELS, event_type, payload, key=self.holder.schema.name, cause=cause)

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self.join(10)
