"""The whole loop on the embedded broker with five real service processes: cold start, a
concept drift, detection, retraining, promotion and a hot swap, traced end to end; once with
the registry on SQLite and once on PostgreSQL (a new database, migrated by the registry at
start-up, then the registry restarted on the migrated database before the loop runs)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from services.demo.driver import DemoConfig, run_demo
from services.supervisor import Stack
from tests.integration.conftest import postgres_database, restart, start_stack, stop_stack, wait_for

pytestmark = pytest.mark.integration


# NOTE: on PostgreSQL in `make test-long` only: the scale-out test closes the loop on
# PostgreSQL registry replicas in `make test` (this variant cost 37 s of a 25-minute budget).
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.long)])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp(f"loop-{request.param}")
    if request.param == "sqlite":
        running = start_stack(folder)
        yield running
        stop_stack(running)
        return
    with postgres_database() as database:
        running = start_stack(folder, CTLOOP_REGISTRY_DB_URL=database)
        try:
            # started once on the empty database (migrated it); now on the migrated one
            restart(running, "registry")
            registry = running.url("registry")
            wait_for(
                lambda: httpx.get(f"{registry}/healthz", timeout=5).status_code == 200, "the registry again"
            )
            yield running
        finally:
            stop_stack(running)


def test_served_version_changes_after_the_drift_and_accuracy_recovers(stack: Stack) -> None:
    urls = {s: stack.url(s) for s in ("registry", "ingest", "trainer", "monitor", "serving")}
    config = DemoConfig(warmup=1000, drift_at=1500, after_swap=600, timeout_s=300)
    report = run_demo(stack, config, say=print)
    print(report.model_dump_json(indent=2))

    assert report.closed, report.reason
    assert report.new_version is not None and report.first_version is not None
    assert report.new_version > report.first_version
    assert report.failed_requests == 0
    assert report.accuracy_before is not None and report.accuracy_before > 0.8
    assert report.accuracy_just_after is not None and report.accuracy_just_after < 0.65
    assert report.accuracy_after_swap is not None and report.accuracy_after_swap > 0.8
    assert report.recovered

    # One correlation id from the drift to the swap.
    kinds = [line.split()[0] + " " + line.split()[1] for line in report.trace]
    for step in (
        "DRIFT detected",
        "TRAINING started",
        "TRAINING completed",
        "REGISTRY registered",
        "REGISTRY promoted",
        "SERVING swapped",
    ):
        assert step in kinds, (step, report.trace)

    # The registry's lineage ties the new version to the drift that caused it.
    version = httpx.get(
        f"{urls['registry']}/v1/models/demo/versions/{report.new_version}", headers=stack.auth()
    ).json()
    # (the drift's first candidate, or a refresh of it that serving swapped to first)
    assert version["lineage"]["trigger"] in ("drift", "refresh"), version["lineage"]
    assert version["lineage"]["correlation_id"][:8] in {
        line.rsplit("[loop ", 1)[1][:8] for line in report.trace
    }
    champion = httpx.get(f"{urls['registry']}/v1/models/demo/aliases/champion", headers=stack.auth()).json()
    assert champion["version"] >= report.new_version  # it, or a refresh of it, is the champion

    runs = httpx.get(f"{urls['trainer']}/v1/runs").json()
    assert any(r["trigger"]["kind"] == "drift" and r["status"] == "completed" for r in runs)
    status = httpx.get(f"{urls['monitor']}/v1/drift/status", headers=stack.auth()).json()
    assert status["last_alarm"] is not None
    assert status["reference_version"] >= report.new_version
