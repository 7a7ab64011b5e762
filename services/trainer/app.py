"""The trainer's HTTP API: list runs and their reports, and ask for a run by hand (on any
replica: the request goes to the active one through the control topic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Header
from kafka.errors import KafkaError

from services.trainer.run import RunReport, Trigger
from services.trainer.service import Trainer
from shared import topics
from shared.events import RunRequested
from shared.http import Forbidden, NotFound, Unauthorized, Unavailable, create_app
from shared.registry_client import RegistryUnavailable
from shared.supervision import Supervisor
from shared.vocabulary import TriggerKind


def build_app(
    trainer: Trainer,
    ready: Callable[[], bool],
    role_of: Callable[[str], str | None],
    supervisor: Supervisor | None = None,
) -> FastAPI:
    """`role_of(token)` is the registry's answer to whose token a caller presents: the trainer
    holds no operator token to compare with."""
    app = create_app(
        "ctloop trainer",
        health=lambda: {
            "ready": ready(),
            "service": "trainer",
            "examples": len(trainer.examples),
            "champion_version": trainer.champion_version,
            "active": trainer.active.is_set(),
        },
        supervisor=supervisor,
        max_body_bytes=trainer.settings.http_max_body_bytes,
    )

    @app.get("/v1/runs", response_model=list[RunReport], tags=["runs"])
    def list_runs() -> list[RunReport]:
        """Every run of this trainer, newest first, with phases, metrics and gate report."""
        return list(reversed(trainer.runs))

    def operator_only(authorization: Annotated[str | None, Header()] = None) -> None:
        # A run changes what may become champion, and anyone looping this endpoint kept a fit
        # running for ever: operators only (the route has no body to read first).
        scheme, _, token = (authorization or "").partition(" ")
        try:
            role = role_of(token) if scheme.lower() == "bearer" and token else None
        except RegistryUnavailable as exc:
            raise Unavailable(
                f"the registry, which knows the operators' token, cannot answer: {exc}"
            ) from exc
        if role is None:
            raise Unauthorized(
                "starting a run needs the operator's bearer token", {"WWW-Authenticate": "Bearer"}
            )
        if role != "operator":
            raise Forbidden(f"the {role} role may not start a run (operator only)")

    operator = [Depends(operator_only)]

    @app.post("/v1/runs", response_model=Trigger, status_code=202, tags=["runs"], dependencies=operator)
    def trigger_run() -> Trigger:
        """Ask for a run now on the sliding window of examples (merged into any waiting one).
        Any replica takes the request: it is written to the control topic, which the active
        trainer reads; the answer's `event_id` is the request's, which the run's events list
        (as their trigger, or merged). Needs `Authorization: Bearer <CTLOOP_OPERATOR_TOKEN>`."""
        event_id, written = trainer.publisher.publish(
            topics.TRAINER_CONTROL, RunRequested(model_name=trainer.schema.name), key=trainer.schema.name
        )
        try:
            written.get(timeout=15)
        except KafkaError as exc:
            raise Unavailable(f"the request could not be written to Kafka: {exc}") from exc
        return Trigger(kind=TriggerKind.MANUAL, event_id=event_id, correlation_id=event_id)

    @app.get("/v1/runs/{run_id}", response_model=RunReport, tags=["runs"])
    def get_run(run_id: str) -> RunReport:
        for run in trainer.runs:
            if run.run_id == run_id:
                return run
        raise NotFound(f"no run {run_id!r}")

    return app
