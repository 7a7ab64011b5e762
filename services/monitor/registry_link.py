"""The monitor's calls to the registry, off faust's event loop and never lost.

The agents ask (`fetch_reference`, `promote`, `rollback`) and go on with their stream; a
supervised worker makes each call with the one `RegistryClient`, in the order asked, and hands
a fetched reference back to the event loop. A request stays at the head of the queue until
the registry has answered it: while the registry is unavailable the worker raises, the
supervisor restarts it with backoff (and `/healthz` names it), and the request is tried again.
A refusal (4xx), or an answer that is not a valid version, is logged and dropped, since
asking again would get the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from services.monitor.comparison import ShadowVerdict, Underperformance
from shared.registry_api import PRODUCTION, ModelVersion
from shared.registry_client import RegistryClient, RegistryRefused
from shared.settings import alias_of_environment
from shared.vocabulary import Alias

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchReference:
    """Fetch a version (or the version an alias points at) and hand it to `on_reference`."""

    alias: Alias
    version: int | None = None
    only_if_unset: bool = False
    """At start-up: apply only if no promotion event has set a reference meanwhile."""
    only_if_changed: bool = False
    """The periodic check: apply only if it is not the reference already (a reset would empty
    the windows)."""


@dataclass(frozen=True)
class Promote:
    verdict: ShadowVerdict


@dataclass(frozen=True)
class Rollback:
    finding: Underperformance


Request = FetchReference | Promote | Rollback
OnReference = Callable[[FetchReference, ModelVersion], None]
"""Called on the event loop with a fetched version."""


class RegistryLink:
    name = "registry-link"

    def __init__(
        self,
        registry: RegistryClient,
        model_name: str,
        on_reference: OnReference,
        environment: str = PRODUCTION,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.on_reference = on_reference
        self.environment = environment
        # the monitor's slots -> the registry's aliases (no challenger outside production)
        self.aliases = {Alias.CHAMPION: alias_of_environment(environment)}
        if environment == PRODUCTION:
            self.aliases[Alias.CHALLENGER] = Alias.CHALLENGER
        self.loop: asyncio.AbstractEventLoop | None = None
        """Where `on_reference` runs; set by the agent that starts the link."""
        self._queue: deque[Request] = deque()
        self._wake = threading.Condition()
        self._stopping = False

    def ask(self, request: Request) -> None:
        """Queue a call; returns at once."""
        with self._wake:
            self._queue.append(request)
            self._wake.notify()

    def pending(self) -> int:
        return len(self._queue)

    def run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                request = self._queue[0]
            self._call(request)  # raises while the registry is unavailable: the request stays
            with self._wake:
                self._queue.popleft()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _call(self, request: Request) -> None:
        try:
            match request:
                case FetchReference(alias=alias, version=version):
                    if version is None and alias not in self.aliases:
                        return  # this environment has no such slot
                    found = (
                        self.registry.version(self.model_name, version)
                        if version is not None
                        else self.registry.alias(self.model_name, self.aliases[alias])
                    )
                    if found is not None:
                        self._hand_back(request, found)
                case Promote(verdict=verdict):
                    log.warning("%s; asking the registry to promote it", verdict.reason)
                    # conditional on the champion it was compared with: a 409 (someone moved
                    # it meanwhile) is a refusal, logged and dropped
                    self.registry.promote(
                        self.model_name,
                        verdict.challenger_version,
                        Alias.CHAMPION,
                        verdict.reason,
                        replaces=verdict.champion_version,
                    )
                case Rollback(finding=finding):
                    log.warning("%s; asking the registry to roll back", finding.reason)
                    # only from the champion found wanting: another monitor worker (or a person)
                    # who rolled back first makes this one a 409, not a flip back
                    self.registry.rollback(
                        self.model_name,
                        finding.reason,
                        replaces=finding.current_version,
                        environment=self.environment,
                    )
        except (RegistryRefused, ValidationError) as exc:  # asking again would get the same answer
            log.error("registry refused %s, or answered it with something invalid: %s", request, exc)

    def _hand_back(self, request: FetchReference, version: ModelVersion) -> None:
        if self.loop is None:
            self.on_reference(request, version)
        else:
            self.loop.call_soon_threadsafe(self.on_reference, request, version)
