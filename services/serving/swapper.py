"""Follows the registry: loads the version its environment's alias names (production's
`champion`, and its challenger for shadow scoring; another environment's alias is its name) at
start-up, retrying while the registry is not there yet, and swaps whenever either alias moves
on `models` (to the version the registry's alias names then: the event is only a hint). A swap
of the served model, done or refused, is reported as an event carrying the promotion's
correlation id and the environment.

A version refused by the performance check, or not swapped because the registry did not
answer, is tried again sooner than the reconcile would (after `retry_s`, then twice as long
each time, `CHECK_RETRIES` times): the check times wall clock on serving's machine, and a
moment of load can refuse a model that is fine. Meanwhile the registry's champion is not what
serving serves, and the monitor, which judges the champion's predictions, sees none. A
version that does not load waits for the reconcile. NOTE: seen on a slow day of a 2-core
machine (the demo, abrupt stream): a refresh ending in HistGradientBoosting after a logistic
first model was refused at 42.7 ms per row (p99 of the fastest of 3 passes; its budget 25
ms); serving kept the first model, the monitor got no predictions by the champion, and the
drift's only event was a feature alarm 2,140 records after the change.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace

from kafka.consumer.fetcher import ConsumerRecord

from services.serving.holder import ModelHolder, SwapRefused
from shared import topics
from shared.events import Envelope, ModelPromoted, ModelSwapFailed, ModelSwapped, SwapCheck
from shared.kafka import EventPublisher, decoded
from shared.registry_api import PRODUCTION
from shared.registry_client import RegistryError
from shared.settings import alias_of_environment
from shared.vocabulary import Alias

log = logging.getLogger(__name__)

CHECK_RETRIES = 4
"""Times a refused version (by the check, or for want of the registry) is tried again before
the reconcile's turn."""


@dataclass(frozen=True)
class _Retry:
    number: int
    cause: Envelope | None
    attempts: int
    due: float


class Swapper:
    """A supervised worker (`shared.supervision`): `handle` (the consume loop's handler) notes
    the wanted versions, `run` loads them."""

    name = "swapper"

    def __init__(
        self, holder: ModelHolder, publisher: EventPublisher, retry_s: float, environment: str = PRODUCTION
    ) -> None:
        self.holder = holder
        self.publisher = publisher
        self.retry_s = retry_s
        self.environment = environment
        served = alias_of_environment(environment)
        # registry alias -> the holder's slot it fills; the champion's first (a promoted
        # challenger must not be shadowed)
        self.slots = {served: Alias.CHAMPION}
        if environment == PRODUCTION:
            self.slots[Alias.CHALLENGER] = Alias.CHALLENGER
        self._wanted: dict[str, tuple[int, Envelope | None]] = {}
        self._retries: dict[str, _Retry] = {}
        """Per alias, the refused version to try again and when."""
        self._wake = threading.Condition()
        self._stop = False

    def handle(self, messages: list[ConsumerRecord]) -> None:
        """Consume-loop handler: remember the newest version of each alias; the thread swaps."""
        for _, event, payload in decoded(messages, self.publisher):
            if (
                isinstance(payload, ModelPromoted)
                and payload.alias in self.slots
                and payload.model_name == self.holder.schema.name
            ):
                with self._wake:
                    self._wanted[payload.alias] = (payload.version, event)
                    self._wake.notify()

    def run(self) -> None:
        last_check = -1e9
        while not self._stop:
            with self._wake:
                # NOTE: events are the main path; asking the registry now and then also covers
                # the start-up (no model yet) and a promotion made before this consumer joined.
                interval = self.retry_s if self.holder.current is None else 15 * self.retry_s
                if not self._wanted and time.monotonic() - last_check >= interval:
                    last_check = time.monotonic()
                    self._reconcile()
                for alias, retry in list(self._retries.items()):
                    if time.monotonic() >= retry.due:  # taken once; a refusal sets the next time
                        self._retries[alias] = replace(retry, due=math.inf)
                        self._wanted.setdefault(alias, (retry.number, retry.cause))  # not over a newer one
                wanted, self._wanted = self._wanted, {}
                if not wanted:
                    self._wake.wait(self.retry_s)
                    continue
            for alias in self.slots:
                if alias in wanted:
                    self._swap(alias, *wanted[alias])

    def _reconcile(self) -> None:
        for alias in self.slots:
            try:
                target = self.holder.registry.alias(self.holder.schema.name, alias)
            except RegistryError as exc:
                log.info("registry not reachable: %s", exc)
                self.holder.load_cache()  # only acts while nothing is loaded yet
                return
            loaded = self.holder.current if self.slots[alias] == Alias.CHAMPION else self.holder.challenger
            if target is None:
                if self.slots[alias] == Alias.CHALLENGER and loaded is not None:
                    self.holder.drop_challenger()
            elif loaded is None or loaded.number != target.version:
                self._wanted[alias] = (target.version, None)

    def _swap(self, alias: str, number: int, cause: Envelope | None) -> None:
        slot = self.slots[alias]
        current = self.holder.current if slot == Alias.CHAMPION else self.holder.challenger
        if current is not None and current.number == number:
            return
        if (
            slot == Alias.CHALLENGER
            and self.holder.current is not None
            and self.holder.current.number == number
        ):
            self.holder.drop_challenger()  # the challenger alias trails a promotion: nothing to shadow
            return
        previous = current.number if current else None
        # Without an event to follow (the registry named a newer version, or a reconcile), the
        # swap carries the version's own loop, from its lineage: it still traces to its cause.
        loop: str | None = None
        try:
            # NOTE: an event is a hint, the registry is the truth: serving loads what the alias
            # points at now, so a forged or stale `models` event cannot make it load a version
            # no alias names (an archived one, one rolled back).
            version = self.holder.registry.alias(self.holder.schema.name, alias)
            if version is None:
                raise SwapRefused(f"the registry's {alias} points at no version (an event named v{number})")
            if version.version != number:
                log.warning(
                    "an event named %s v%d, but the registry's %s is v%d: following the registry",
                    alias,
                    number,
                    alias,
                    version.version,
                )
                number, cause = version.version, None
                if current is not None and current.number == number:
                    return
                champion = self.holder.current
                if slot == Alias.CHALLENGER and champion is not None and champion.number == number:
                    self.holder.drop_challenger()  # as above: nothing to shadow
                    return
            if cause is None:
                loop = version.lineage.correlation_id
            swap = self.holder.swap_to(version, slot)
        except (SwapRefused, RegistryError) as exc:
            log.error("%s v%d refused, v%s stays: %s", alias, number, previous, exc)
            check = exc.check if isinstance(exc, SwapRefused) else None
            if check is not None or isinstance(exc, RegistryError):  # both may pass in a moment
                self._retry_later(alias, number, cause)
            if slot == Alias.CHAMPION:
                self._report(ModelSwapFailed, number, previous, 0.0, cause, str(exc), check, loop)
            return
        self._retries.pop(alias, None)
        log.info(
            "%s v%s -> v%d in %.0f ms (load %.0f ms, check %.0f ms)",
            alias,
            previous,
            number,
            swap.seconds * 1000,
            swap.load_seconds * 1000,
            (swap.seconds - swap.load_seconds) * 1000,
        )
        if slot == Alias.CHAMPION:
            self._report(ModelSwapped, number, previous, swap.seconds * 1000, cause, None, swap.check, loop)

    def _retry_later(self, alias: str, number: int, cause: Envelope | None) -> None:
        """Note a refused version to try again; a version refused `CHECK_RETRIES` times waits
        for the reconcile (a newer version replaces it at once)."""
        earlier = self._retries.get(alias)
        attempts = earlier.attempts + 1 if earlier is not None and earlier.number == number else 1
        if attempts > CHECK_RETRIES:
            self._retries.pop(alias, None)
            return
        delay = self.retry_s * 2 ** (attempts - 1)
        self._retries[alias] = _Retry(number, cause, attempts, time.monotonic() + delay)

    def _report(
        self,
        kind: type[ModelSwapped] | type[ModelSwapFailed],
        number: int,
        previous: int | None,
        ms: float,
        cause: Envelope | None,
        reason: str | None,
        check: SwapCheck | None,
        loop: str | None = None,
    ) -> None:
        payload = kind(
            model_name=self.holder.schema.name,
            version=number,
            previous_version=previous,
            duration_ms=ms,
            reason=reason,
            check=check,
            environment=self.environment,
        )
        self.publisher.publish(
            topics.MODELS, payload, key=self.holder.schema.name, cause=cause, correlation_id=loop
        )

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
