"""The registry's HTTP API: models, versions, artifacts, aliases and promotion.

Writes need `Authorization: Bearer <CTLOOP_REGISTRY_TOKEN>`. An upload is refused unless its
bytes match the declared digest, it loads under ctloop's skops allow-list, and it carries an
input schema. With the `auto` policy a candidate whose gates passed becomes champion in the
same transaction that registers it.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Header, Path, UploadFile
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import ValidationError

from services.registry.artifacts import ArtifactStore
from services.registry.store import RegistryStore
from shared.http import BadRequest, NotFound, Unauthorized, Unprocessable, create_app
from shared.registry_api import ModelSummary, ModelVersion, PromoteRequest, VersionMetadata
from shared.registry_client import DIGEST_HEADER
from shared.schema import NAME_PATTERN
from shared.serialization import ArtifactError, digest, load_model
from shared.settings import RegistrySettings

UPLOADS = Counter("ctloop_registry_uploads_total", "Model uploads by outcome", ["outcome"])
PROMOTIONS = Counter("ctloop_registry_promotions_total", "Alias changes", ["alias"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Model (dataset schema) name")]
Alias = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


def build_app(settings: RegistrySettings, store: RegistryStore, artifacts: ArtifactStore) -> FastAPI:
    app = create_app("ctloop registry", health=lambda: {"ready": True, "service": "registry"})

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), settings.registry_token.encode()
        ):
            raise Unauthorized(
                "a valid bearer token is required for writes", headers={"WWW-Authenticate": "Bearer"}
            )

    def version_or_404(name: str, version: int) -> ModelVersion:
        found = store.version(name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found

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

    @app.post(
        "/v1/models/{name}/versions",
        response_model=ModelVersion,
        status_code=201,
        tags=["versions"],
        dependencies=[Depends(require_token)],
    )
    async def upload_version(
        name: ModelName,
        artifact: Annotated[UploadFile, File(description="skops artifact")],
        metadata: Annotated[str, Form(description="VersionMetadata as JSON")],
    ) -> ModelVersion:
        """Register a new version: the artifact and its metadata (digest, input schema, metrics,
        gate report, dataset manifest, reference profile, lineage)."""
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
        data = await artifact.read()
        if digest(data) != meta.digest:
            UPLOADS.labels("digest_mismatch").inc()
            raise BadRequest(f"artifact digest {digest(data)} does not match metadata.digest {meta.digest}")
        try:
            load_model(data, meta.digest)
        except ArtifactError as exc:
            UPLOADS.labels("refused_artifact").inc()
            raise BadRequest(f"artifact refused: {exc}") from exc
        artifacts.put(data)
        promote = (
            "champion" if settings.registry_promotion_policy == "auto" and meta.gate_report.passed else None
        )
        created = store.create_version(name, meta, promote_to=promote)
        UPLOADS.labels("registered").inc()
        if promote:
            PROMOTIONS.labels(promote).inc()
        return created

    @app.get("/v1/models/{name}/versions/{version}", response_model=ModelVersion, tags=["versions"])
    def get_version(name: ModelName, version: int) -> ModelVersion:
        return version_or_404(name, version)

    @app.get("/v1/models/{name}/versions/{version}/artifact", tags=["versions"], response_class=Response)
    def get_artifact(name: ModelName, version: int) -> Response:
        """The artifact bytes; the digest is in the `X-Ctloop-Digest` header."""
        found = version_or_404(name, version)
        return Response(
            artifacts.get(found.digest),
            media_type="application/octet-stream",
            headers={DIGEST_HEADER: found.digest},
        )

    @app.get("/v1/models/{name}/aliases/{alias}", response_model=ModelVersion, tags=["aliases"])
    def get_alias(name: ModelName, alias: Alias) -> ModelVersion:
        """The version an alias (`champion`, `challenger`) points at."""
        found = store.alias(name, alias)
        if found is None:
            raise NotFound(f"model {name!r} has no {alias}")
        return found

    @app.post(
        "/v1/models/{name}/versions/{version}/promote",
        response_model=ModelVersion,
        tags=["aliases"],
        dependencies=[Depends(require_token)],
    )
    def promote(name: ModelName, version: int, body: PromoteRequest | None = None) -> ModelVersion:
        """Point an alias (default `champion`) at this version."""
        alias = (body or PromoteRequest()).alias
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", alias):
            raise BadRequest(f"alias {alias!r} must match [a-z][a-z0-9_-]{{0,31}}")
        promoted = store.promote(name, version, alias)
        if promoted is None:
            raise NotFound(f"model {name!r} has no version {version}")
        PROMOTIONS.labels(alias).inc()
        return promoted

    return app
