"""The environments a version passes through on its way to production, and their rules.

Each environment has an alias (production's is `champion`; every other one's is its name) and
a rule for how a version gets in: `auto` (on upload when the gates passed, for the first one;
as soon as the version reached the previous one, for the others), `after` (automatically once
it has been in the previous environment for a while without being rolled back or raising an
alarm there: the `AfterRule` worker), `manual` (an operator), and for production also `shadow` (as the
challenger, which the monitor promotes). A version can reach an environment only after the
previous one; the store checks that in the transaction that moves the alias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.registry_api import PRODUCTION, EnvironmentInfo, EnvironmentRule
from shared.settings import RegistrySettings, alias_of_environment

Rule = Literal["auto", "after", "manual", "shadow"]


@dataclass(frozen=True)
class Stage:
    name: str
    alias: str
    rule: Rule
    after_s: float
    after_labelled: int
    previous: Stage | None

    def info(self) -> EnvironmentInfo:
        return EnvironmentInfo(
            name=self.name,
            alias=self.alias,
            rule=self.rule,
            after_s=self.after_s,
            after_labelled=self.after_labelled,
            previous=self.previous.name if self.previous else None,
        )


class UnknownEnvironment(KeyError):
    """No environment of that name (or alias)."""


class Environments:
    """The ordered environments: those configured, then production with the promotion policy."""

    def __init__(self, before: list[EnvironmentRule], production_policy: Rule) -> None:
        stages: list[Stage] = []
        for spec in before:
            previous = stages[-1] if stages else None
            stages.append(Stage(spec.name, spec.name, spec.rule, spec.after_s, spec.after_labelled, previous))
        production = alias_of_environment(PRODUCTION)
        stages.append(
            Stage(PRODUCTION, production, production_policy, 0.0, 0, stages[-1] if stages else None)
        )
        self.stages = stages

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> Environments:
        return cls(settings.registry_environments, settings.registry_promotion_policy)

    def named(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UnknownEnvironment(f"no environment {name!r}; there are {[s.name for s in self.stages]}")

    def of_alias(self, alias: str) -> Stage | None:
        """The environment an alias belongs to (the challenger is production's); None for an
        alias outside the environments (any name an operator points somewhere)."""
        if alias == "challenger":
            return self.stages[-1]
        return next((s for s in self.stages if s.alias == alias), None)

    def following(self, stage: Stage | None, has_champion: bool) -> list[str]:
        """The aliases a version moves into automatically, in order, once it reached `stage`
        (None: on upload with its gates passed): the next stages while their rule is `auto`;
        a `shadow` production takes it as the challenger (or as champion when there is none)."""
        start = 0 if stage is None else self.stages.index(stage) + 1
        aliases: list[str] = []
        for nxt in self.stages[start:]:
            if nxt.rule == "shadow":
                aliases.append("challenger" if has_champion else "champion")
                break
            if nxt.rule != "auto":
                break
            aliases.append(nxt.alias)
        return aliases

    def after_rules(self) -> list[Stage]:
        return [s for s in self.stages if s.rule == "after"]

    def needs_evidence(self) -> bool:
        """Whether an `after` rule exists, which waits for labelled predictions and is held by
        alarms (the registry then follows the monitors' measurements and alarms)."""
        return bool(self.after_rules())
