"""The registry's HTTP API: models, versions, artifacts, aliases, promotion, rollback, lineage.

Writes need a role's bearer token (docs/security.md): uploads the `trainer`'s; alias changes the
`operator`'s, or the `monitor`'s for the loop's own two (rolling back the champion, making its
challenger champion). When a `reader` token is configured, reads need it or any role's token.
An upload is refused unless its bytes match the declared digest, it loads under ctloop's skops
allow-list, and it carries an input schema; the artifact may come with the version or ahead of
it (staged: verified at once and held in memory, so the trainer's gates run meanwhile). A
candidate whose gates passed enters the environments whose rule lets it in at once
(`environments.py`: by default staging, then production's champion under policy `auto`) in the
transaction that registers it; a version reaches an environment only after the previous one.
Every version is signed (Ed25519 over its name, number, digest and input schema, with a key only
the registry holds); downloads carry the digest and the signature in headers for the loader to
verify.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from services.registry.artifacts import Artifacts, StagedArtifacts
from services.registry.environments import Environments, UnknownEnvironment
from services.registry.store import RegistryStore, StoreConflict
from shared.http import BadRequest, Conflict, Forbidden, NotFound, RoleRule, Unprocessable, create_app
from shared.registry_api import (
    AliasChange,
    AliasTarget,
    ApproveRequest,
    ConditionalChange,
    EnvironmentInfo,
    ModelSummary,
    ModelVersion,
    PromoteRequest,
    RollbackRequest,
    StagedArtifact,
    VersionLineage,
    VersionMetadata,
    VersionNumber,
)
from shared.registry_client import DIGEST_HEADER, SIGNATURE_HEADER
from shared.schema import NAME_PATTERN
from shared.serialization import ArtifactError, digest, load_model
from shared.settings import ROLES, RegistrySettings
from shared.supervision import Supervisor

UPLOADS = Counter("ctloop_registry_uploads_total", "Model uploads by outcome", ["outcome"])
PROMOTIONS = Counter("ctloop_registry_promotions_total", "Alias changes", ["alias"])
ROLLBACKS = Counter("ctloop_registry_rollbacks_total", "Champion rollbacks")


ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model (dataset schema) name")]
Alias = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
ArtifactDigest = Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of the artifact")]


UPLOAD_FORM: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["artifact", "metadata"],
                    "properties": {
                        "artifact": {"type": "string", "format": "binary", "description": "skops artifact"},
                        "metadata": {"type": "string", "description": "VersionMetadata as JSON"},
                    },
                }
            },
            "application/json": {
                "schema": {"type": "object", "description": "VersionMetadata, for a staged artifact"}
            },
        },
    }
}
"""The upload's body, documented by hand: the route reads its form itself (after the token)."""
ARTIFACT_BODY: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

MODEL = r"/v1/models/[^/]+"
GUARDED_WRITES: list[RoleRule] = [
    ("POST", MODEL + r"/versions", ("trainer",), "uploading a version"),
    ("PUT", r"/v1/artifacts/[^/]+", ("trainer",), "staging an artifact"),
    ("POST", MODEL + r"/versions/[^/]+/promote", ("operator", "monitor"), "promoting"),
    ("POST", MODEL + r"/versions/[^/]+/approve", ("operator",), "approving"),
    ("POST", MODEL + r"/versions/[^/]+/archive", ("operator",), "archiving"),
    ("POST", MODEL + r"/aliases/[^/]+", ("operator",), "moving an alias"),
    ("POST", MODEL + r"/rollback", ("operator", "monitor"), "rolling back"),
    ("GET", r"/v1/auth", ROLES, "checking a token"),
]
"""Who may write what. The monitor's promotions are narrowed further in the route."""
READS: RoleRule = ("GET", r"/v1/.*", ROLES, "reading the registry")
"""Guarded only when a reader token is configured."""


def build_app(
    settings: RegistrySettings,
    store: RegistryStore,
    artifacts: Artifacts,
    supervisor: Supervisor | None = None,
) -> FastAPI:
    environments = Environments.from_settings(settings)
    staged = StagedArtifacts()
    app = create_app(
        "ctloop registry",
        health=lambda: {"ready": True, "service": "registry"},
        supervisor=supervisor,
        max_body_bytes=settings.http_max_body_bytes,
        larger_bodies=[
            ("POST", r"/v1/models/[^/]+/versions", settings.registry_max_artifact_bytes),
            ("PUT", r"/v1/artifacts/[^/]+", settings.registry_max_artifact_bytes),
        ],
        tokens={role: settings.token(role) for role in ROLES},
        guarded=[*GUARDED_WRITES, READS] if settings.token("reader") else GUARDED_WRITES,
    )

    @app.get("/v1/auth", tags=["auth"])
    def check_token(request: Request) -> dict[str, str]:
        """The role of the bearer token (401 when it is no role's): how the console and the
        trainer check an operator's token without holding the operator token themselves."""
        return {"role": request.state.role}

    def version_or_404(name: str, version: int) -> ModelVersion:
        found = store.version(name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found

    def changed(result: ModelVersion | None, name: str, version: int) -> ModelVersion:
        if result is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return result

    @app.get("/v1/models", response_model=list[ModelSummary], tags=["models"])
    def list_models() -> list[ModelSummary]:
        """Every model name with its latest version and its aliases."""
        return store.models()

    @app.get("/v1/models/{name}", response_model=ModelSummary, tags=["models"])
    def get_model(name: ModelName) -> ModelSummary:
        for model in store.models():
            if model.name == name:
                return model
        raise NotFound(f"no model named {name!r}")

    @app.get("/v1/models/{name}/versions", response_model=list[ModelVersion], tags=["versions"])
    def list_versions(name: ModelName) -> list[ModelVersion]:
        found = store.versions(name)
        if not found:
            raise NotFound(f"no model named {name!r}")
        return found

    @app.put(
        "/v1/artifacts/{artifact_digest}", status_code=201, tags=["versions"], openapi_extra=ARTIFACT_BODY
    )
    async def stage_artifact(artifact_digest: ArtifactDigest, request: Request) -> StagedArtifact:
        """Send an artifact (the skops file, as the body) ahead of the version that will name
        it: verified now (digest, allow-listed load), then held in this replica's memory for
        a `POST .../versions` whose body is the metadata alone. Nothing is stored until then."""
        data = await request.body()
        return await run_in_threadpool(stage, artifact_digest, data)

    def stage(artifact_digest: str, data: bytes) -> StagedArtifact:
        verify(data, artifact_digest, "the digest in the path")
        staged.add(artifact_digest, data)
        UPLOADS.labels("staged").inc()
        return StagedArtifact(digest=artifact_digest, size=len(data))

    def verify(data: bytes, artifact_digest: str, declared: str) -> None:
        """Refuse (400) bytes that are not `artifact_digest`'s (as `declared` names it), or
        that do not load under the allow-list."""
        if digest(data) != artifact_digest:
            UPLOADS.labels("digest_mismatch").inc()
            raise BadRequest(f"artifact digest {digest(data)} does not match {declared} {artifact_digest}")
        try:
            load_model(data)  # its digest was checked just above
        except ArtifactError as exc:
            UPLOADS.labels("refused_artifact").inc()
            raise BadRequest(f"artifact refused: {exc}") from exc

    @app.post(
        "/v1/models/{name}/versions",
        response_model=ModelVersion,
        status_code=201,
        tags=["versions"],
        openapi_extra=UPLOAD_FORM,
    )
    async def upload_version(name: ModelName, request: Request) -> ModelVersion:
        """Register a new version: a multipart form of the `artifact` (skops file) and its
        `metadata` (VersionMetadata as JSON: digest, input schema, metrics, gate report,
        dataset manifest, reference profile, lineage); or the metadata alone as a JSON body,
        for an artifact staged on this replica (`PUT /v1/artifacts/{digest}`; 409 when it is
        not staged here)."""
        if request.headers.get("content-type", "").startswith("application/json"):
            alone = (await request.body()).decode("utf-8", errors="replace")
            return await run_in_threadpool(register, name, None, alone)
        # NOTE: the form is read here, after the token was checked (a dependency): declared as
        # parameters, FastAPI read and spooled the whole body first, so a 5 MB upload without
        # a token cost its full read before the 401.
        async with request.form(
            max_files=1, max_fields=1, max_part_size=settings.registry_max_artifact_bytes
        ) as form:
            artifact, metadata = form.get("artifact"), form.get("metadata")
            if not isinstance(artifact, UploadFile) or not isinstance(metadata, str):
                raise Unprocessable(
                    [
                        {
                            "field": "body",
                            "reason": "a multipart form with an `artifact` file and `metadata` text, "
                            "or the metadata alone as JSON for a staged artifact",
                        }
                    ]
                )
            data = await artifact.read()
        # Verifying an artifact (a full skops load, ~10 ms for the demo pipeline) and writing it
        # must not stall the event loop that answers serving's downloads and every health check.
        return await run_in_threadpool(register, name, data, metadata)

    def register(name: str, data: bytes | None, metadata: str) -> ModelVersion:
        """`data`: the artifact, verified here; None: the one staged under the metadata's
        digest (verified when it was staged)."""
        try:
            meta = VersionMetadata.model_validate_json(metadata)
        except ValidationError as exc:
            UPLOADS.labels("invalid").inc()
            raise Unprocessable(
                [
                    {"field": "metadata." + ".".join(map(str, e["loc"])), "reason": e["msg"]}
                    for e in exc.errors()
                ]
            ) from exc
        if meta.input_schema.name != name:
            UPLOADS.labels("invalid").inc()
            raise BadRequest(f"input schema is for {meta.input_schema.name!r}, not {name!r}")
        if data is None:
            data = staged.take(meta.digest)
            if data is None:
                UPLOADS.labels("not_staged").inc()
                raise Conflict(
                    f"artifact {meta.digest} is not staged on this registry replica: send it with "
                    "the version (multipart form) or PUT it to /v1/artifacts/{digest} first"
                )
        else:
            verify(data, meta.digest, "metadata.digest")
        artifacts.put(data)
        # the environments it enters at once (a shadow production with no champion yet takes it
        # as champion: there is nothing to shadow against)
        chain = environments.following(None, store.alias(name, "champion") is not None)
        created = store.create_version(
            name, meta, promote_to=chain if meta.gate_report.passed else (), actor="trainer"
        )
        UPLOADS.labels("registered").inc()
        for name_of_alias in created.aliases:
            PROMOTIONS.labels(name_of_alias).inc()
        return created

    @app.get("/v1/models/{name}/versions/{version}", response_model=ModelVersion, tags=["versions"])
    def get_version(name: ModelName, version: VersionNumber) -> ModelVersion:
        return version_or_404(name, version)

    @app.get("/v1/models/{name}/versions/{version}/artifact", tags=["versions"], response_class=Response)
    def get_artifact(name: ModelName, version: VersionNumber) -> Response:
        """The artifact bytes; digest and signature in `X-Ctloop-Digest`, `X-Ctloop-Signature`."""
        found = version_or_404(name, version)
        try:
            data = artifacts.get(found.digest)
        except FileNotFoundError as exc:
            raise NotFound(f"the artifact of {name} v{version} is missing from the store") from exc
        return Response(
            data,
            media_type="application/octet-stream",
            headers={DIGEST_HEADER: found.digest, SIGNATURE_HEADER: found.signature},
        )

    @app.get("/v1/models/{name}/aliases/{alias}", response_model=ModelVersion, tags=["aliases"])
    def get_alias(name: ModelName, alias: Alias) -> ModelVersion:
        """The version an alias (`champion`, `challenger`) points at."""
        found = store.alias(name, alias)
        if found is None:
            raise NotFound(f"model {name!r} has no {alias}")
        return found

    def alias_of(environment: str) -> str:
        try:
            return environments.named(environment).alias
        except UnknownEnvironment as exc:
            raise Unprocessable([{"field": "environment", "reason": str(exc.args[0])}]) from exc

    def set_alias(
        name: str, version: int, alias: str, reason: str, condition: ConditionalChange, actor: str
    ) -> ModelVersion:
        stage = environments.of_alias(alias)
        if stage is not None and stage.previous is not None:
            before = stage.previous
            if not store.has_been(name, before.alias, version) and store.version(name, version) is not None:
                raise Conflict(
                    f"{name} v{version} has not been in {before.name}: {stage.name} takes versions "
                    f"only from {before.name}"
                )
        try:
            found = store.promote(
                name,
                version,
                alias,
                reason,
                replaces=condition.replaces,
                override_rollback=condition.override_rollback,
                cascade=environments.following(stage, has_champion=True)
                if stage and alias != "challenger"
                else (),
                actor=actor,
            )
            result = changed(found, name, version)
        except StoreConflict as exc:
            raise Conflict(str(exc)) from exc
        PROMOTIONS.labels(alias).inc()
        return result

    @app.post(
        "/v1/models/{name}/versions/{version}/promote",
        response_model=ModelVersion,
        tags=["aliases"],
    )
    def promote(
        name: ModelName, version: VersionNumber, request: Request, body: PromoteRequest | None = None
    ) -> ModelVersion:
        """Point an alias (default `champion`) at this version (`replaces`: only if it points at
        that version now, else 409; a version rolled back from champion needs
        `override_rollback`). The `monitor` role may only make the current challenger champion,
        in place of a named champion, with no override."""
        change = body or PromoteRequest()
        if change.environment is not None:
            change = change.model_copy(update={"alias": alias_of(change.environment)})
        if request.state.role == "monitor":
            challenger = store.alias(name, "challenger")
            if (
                change.alias != "champion"
                or change.replaces is None
                or change.override_rollback
                or challenger is None
                or challenger.version != version
            ):
                raise Forbidden(
                    "the monitor role may only make the current challenger champion, in place of "
                    "the champion it compared it with (replaces), without an override"
                )
        return set_alias(name, version, change.alias, change.reason, change, request.state.role)

    @app.post(
        "/v1/models/{name}/versions/{version}/approve",
        response_model=ModelVersion,
        tags=["aliases"],
    )
    def approve(
        name: ModelName, version: VersionNumber, request: Request, body: ApproveRequest | None = None
    ) -> ModelVersion:
        """A person's approval of a version for an environment (default production: it becomes
        champion), for the `manual` rule and a `shadow` production (the same conditions as a
        promotion)."""
        change = body or ApproveRequest()
        return set_alias(
            name, version, alias_of(change.environment), change.reason, change, request.state.role
        )

    @app.post(
        "/v1/models/{name}/aliases/{alias}",
        response_model=ModelVersion,
        tags=["aliases"],
    )
    def move_alias(name: ModelName, alias: Alias, body: AliasTarget, request: Request) -> ModelVersion:
        """Point `alias` at `{"version": v}` (conditions as for a promotion)."""
        return set_alias(name, body.version, alias, body.reason, body, request.state.role)

    @app.post("/v1/models/{name}/rollback", response_model=ModelVersion, tags=["aliases"])
    def rollback(name: ModelName, request: Request, body: RollbackRequest | None = None) -> ModelVersion:
        """Make an environment's previous version (default production's: the champion) its
        version again, in one call (`replaces`: only if it is that version now, else 409, so two
        callers at once make one rollback; the `monitor` role must name it, in production)."""
        change = body or RollbackRequest()
        alias = alias_of(change.environment)
        if request.state.role == "monitor" and change.replaces is None:
            raise Forbidden("the monitor role may only roll back the version it names (replaces)")
        try:
            result = store.rollback(
                name, change.reason, replaces=change.replaces, alias=alias, actor=request.state.role
            )
        except StoreConflict as exc:
            raise Conflict(str(exc)) from exc
        if result is None:
            raise NotFound(f"model {name!r} has no version in {change.environment}")
        ROLLBACKS.inc()
        return result

    @app.post(
        "/v1/models/{name}/versions/{version}/archive",
        response_model=ModelVersion,
        tags=["versions"],
    )
    def archive(name: ModelName, version: VersionNumber) -> ModelVersion:
        """Retire a version no alias points at: it can no longer be promoted."""
        try:
            return changed(store.archive(name, version), name, version)
        except StoreConflict as exc:
            raise Conflict(str(exc)) from exc

    @app.get("/v1/models/{name}/versions/{version}/lineage", response_model=VersionLineage, tags=["versions"])
    def lineage(name: ModelName, version: VersionNumber) -> VersionLineage:
        """Dataset -> training run -> triggering event -> promotions of this version."""
        found = version_or_404(name, version)
        return VersionLineage(
            name=name,
            version=version,
            dataset=found.dataset,
            run_id=found.lineage.run_id,
            trigger=found.lineage.trigger,
            trigger_event_id=found.lineage.trigger_event_id,
            correlation_id=found.lineage.correlation_id,
            estimator=found.estimator,
            package_versions=found.package_versions,
            promotions=placed(store.history(name, version)),
        )

    def placed(changes: list[AliasChange]) -> list[AliasChange]:
        """The changes with the environment each alias belongs to."""
        for change in changes:
            stage = environments.of_alias(change.alias)
            change.environment = stage.name if stage else None
        return changes

    @app.get("/v1/models/{name}/history", response_model=list[AliasChange], tags=["aliases"])
    def history(name: ModelName, environment: str | None = None) -> list[AliasChange]:
        """Every alias change of this model, oldest first (`environment`: of that one only)."""
        changes = placed(store.history(name))
        return [c for c in changes if c.environment == environment] if environment else changes

    @app.get("/v1/environments", response_model=list[EnvironmentInfo], tags=["aliases"])
    def list_environments() -> list[EnvironmentInfo]:
        """The environments in promotion order, each with its alias and rule."""
        return [stage.info() for stage in environments.stages]

    @app.get("/v1/models/{name}/events", tags=["models"])
    def events(name: ModelName, limit: Annotated[int, Query(ge=1, le=500)] = 500) -> list[dict[str, object]]:
        """The newest `limit` events the registry emitted for this model (as sent on
        `models`), oldest first. Sent events older than the newest
        `CTLOOP_REGISTRY_OUTBOX_KEEP` are pruned."""
        return [json.loads(e) for e in store.events(name, limit)]

    return app
