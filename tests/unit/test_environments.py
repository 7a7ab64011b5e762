"""Which environments a version enters on its own (the rules' pure logic), and the settings
that describe them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.registry.environments import Environments, Rule, UnknownEnvironment
from shared.registry_api import EnvironmentRule
from shared.settings import RegistrySettings

STAGING = EnvironmentRule(name="staging", rule="auto")
PREPROD = EnvironmentRule(name="preprod", rule="after", after_s=60)


@pytest.mark.parametrize(
    ("before", "policy", "has_champion", "on_upload"),
    [
        ([STAGING], "auto", True, ["staging", "champion"]),  # the default: the loop closes by itself
        ([STAGING], "shadow", True, ["staging", "challenger"]),
        ([STAGING], "shadow", False, ["staging", "champion"]),  # nothing to shadow yet
        ([STAGING], "manual", True, ["staging"]),
        ([], "auto", True, ["champion"]),
        ([EnvironmentRule(name="qa", rule="manual")], "auto", True, []),
        ([STAGING, PREPROD], "auto", True, ["staging"]),  # preprod waits for its rule
    ],
)
def test_where_a_version_goes_on_upload(
    before: list[EnvironmentRule], policy: Rule, has_champion: bool, on_upload: list[str]
) -> None:
    assert Environments(before, policy).following(None, has_champion) == on_upload


def test_after_a_step_the_auto_steps_follow_and_each_knows_its_previous() -> None:
    environments = Environments([STAGING, PREPROD], "auto")
    preprod = environments.named("preprod")
    assert environments.following(preprod, has_champion=True) == ["champion"]
    assert preprod.previous is not None and preprod.previous.name == "staging"
    assert (
        environments.of_alias("challenger")
        == environments.of_alias("champion")
        == environments.named("production")
    )
    assert environments.of_alias("some-other-alias") is None
    assert [s.name for s in environments.after_rules()] == ["preprod"]
    with pytest.raises(UnknownEnvironment, match="no environment 'qa'"):
        environments.named("qa")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ('[{"name": "preprod", "rule": "after", "after_s": 5}]', "needs a previous environment"),
        ('[{"name": "production", "rule": "auto"}]', "is reserved"),
        ('[{"name": "qa", "rule": "auto"}, {"name": "qa", "rule": "manual"}]', "must be unique"),
        ('[{"name": "QA!", "rule": "auto"}]', "should match pattern"),
    ],
)
def test_environment_settings_are_checked(monkeypatch: pytest.MonkeyPatch, value: str, error: str) -> None:
    monkeypatch.setenv("CTLOOP_REGISTRY_ENVIRONMENTS", value)
    with pytest.raises(ValidationError, match=error):
        RegistrySettings()
