"""The trainer's HTTP API: list runs and their reports, and trigger a run by hand."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI

from services.trainer.run import RunReport, Trigger
from services.trainer.service import Trainer
from shared.http import NotFound, bearer_auth, create_app
from shared.supervision import Supervisor
from shared.vocabulary import TriggerKind


def build_app(trainer: Trainer, ready: Callable[[], bool], supervisor: Supervisor | None = None) -> FastAPI:
    app = create_app(
        "ctloop trainer",
        health=lambda: {
            "ready": ready(),
            "service": "trainer",
            "examples": len(trainer.examples),
            "champion_version": trainer.champion_version,
        },
        supervisor=supervisor,
        max_body_bytes=trainer.settings.http_max_body_bytes,
    )

    @app.get("/v1/runs", response_model=list[RunReport], tags=["runs"])
    def list_runs() -> list[RunReport]:
        """Every run of this trainer, newest first, with phases, metrics and gate report."""
        return list(reversed(trainer.runs))

    # NOTE: the registry's write token until issue 22's roles: a run changes what may become
    # champion, and anyone looping this endpoint kept a fit running for ever.
    operator = [Depends(bearer_auth(trainer.settings.registry_token, "starting a run"))]

    @app.post("/v1/runs", response_model=Trigger, status_code=202, tags=["runs"], dependencies=operator)
    def trigger_run() -> Trigger:
        """Ask for a run now on the sliding window of examples (merged into any waiting one).
        Needs `Authorization: Bearer <CTLOOP_REGISTRY_TOKEN>`."""
        return trainer.trigger(Trigger(kind=TriggerKind.MANUAL))

    @app.get("/v1/runs/{run_id}", response_model=RunReport, tags=["runs"])
    def get_run(run_id: str) -> RunReport:
        for run in trainer.runs:
            if run.run_id == run_id:
                return run
        raise NotFound(f"no run {run_id!r}")

    return app
