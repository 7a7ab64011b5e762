"""The `after` rule on a real registry store (SQLite): a version moves from staging to
production once it has served long enough and made enough labelled predictions there, and an
alarm or a rollback there holds it back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.registry.after_rule import AfterRule
from services.registry.environments import Environments
from services.registry.store import RegistryStore
from shared.registry_api import EnvironmentRule
from tests.integration.test_registry_store import metadata, store_for

pytestmark = pytest.mark.integration

ENVIRONMENTS = Environments(
    [
        EnvironmentRule(name="staging", rule="auto"),
        EnvironmentRule(name="preprod", rule="after", after_s=60, after_labelled=100),
    ],
    "manual",
)
PREPROD = ENVIRONMENTS.named("preprod")


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    return store_for(f"sqlite:///{tmp_path / 'registry.db'}")


def staged(store: RegistryStore, n: int) -> int:
    return store.create_version("demo", metadata(n), promote_to=["staging"]).version


def test_a_version_waits_for_time_and_labelled_predictions(store: RegistryStore) -> None:
    rule = AfterRule(store, ENVIRONMENTS, interval_s=1)
    version = staged(store, 1)
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert rule.due("demo", PREPROD, datetime.now(UTC)) is None  # not long enough
    assert rule.due("demo", PREPROD, later) is None  # no labelled predictions yet
    store.add_evidence("q1", "demo", "staging", version, labelled=60, correct=50)
    store.add_evidence("q1", "demo", "staging", version, labelled=60, correct=50)  # read twice
    assert store.labelled("demo", "staging", version) == 60
    assert rule.due("demo", PREPROD, later) is None
    store.add_evidence("q2", "demo", "staging", version, labelled=40, correct=38)
    store.add_evidence("q3", "demo", "production", version, labelled=999, correct=1)  # elsewhere
    assert rule.due("demo", PREPROD, later) == (version, None)


def test_an_alarm_in_the_previous_environment_holds_the_version_back(store: RegistryStore) -> None:
    rule = AfterRule(store, ENVIRONMENTS, interval_s=1)
    version = staged(store, 1)
    store.add_evidence("q1", "demo", "staging", version, labelled=500, correct=450)
    store.add_evidence("d1", "demo", "staging", version, alarms=1)
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert store.alarms("demo", "staging", version) == 1
    assert rule.due("demo", PREPROD, later) is None
    # the next version is judged on its own evidence
    newer = staged(store, 2)
    assert rule.due("demo", PREPROD, later) is None  # its own time and labels are still due
    store.add_evidence("q2", "demo", "staging", newer, labelled=100, correct=90)
    assert rule.due("demo", PREPROD, later + timedelta(seconds=61)) == (newer, None)


def test_check_once_promotes_and_the_history_says_why(store: RegistryStore) -> None:
    fast = Environments(
        [
            EnvironmentRule(name="staging", rule="auto"),
            EnvironmentRule(name="preprod", rule="after", after_s=0, after_labelled=10),
        ],
        "manual",
    )
    rule = AfterRule(store, fast, interval_s=1)
    version = staged(store, 1)
    assert rule.check_once() == 0
    store.add_evidence("q1", "demo", "staging", version, labelled=10, correct=9)
    assert rule.check_once() == 1
    assert rule.check_once() == 0  # already there
    held = store.alias_since("demo", "preprod")
    assert held is not None and held[0] == version
    reasons = [change.reason for change in store.history("demo") if change.alias == "preprod"]
    assert reasons == ["after: 10 labelled predictions in staging without a rollback or alarm"]
