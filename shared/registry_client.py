"""The one typed client of the registry's HTTP API, used by the trainer (upload), serving
(artifacts), the monitor (reference profiles, promotions and rollbacks) and `ctloop models`.
It verifies every artifact's digest and the registry's signature over the version before
handing it out.

Errors: `RegistryUnavailable` when the registry cannot answer now (unreachable, 5xx: try
again later), `RegistryRefused` when it answered no (4xx: trying again will not help).
Lookups of something absent return None; writes to something absent are refused.

Given several registry replicas' URLs (comma-separated, for replicas with no load balancer in
front), the client stays with the one that answered last and moves on to the next when it
does not answer: a read on any transport error, a write only when the connection was refused
(a write that timed out may have been applied: sending it to another replica could apply it
twice).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import httpx
from pydantic import BaseModel, TypeAdapter

from shared.registry_api import (
    PRODUCTION,
    AliasChange,
    ApproveRequest,
    EnvironmentInfo,
    ModelSummary,
    ModelVersion,
    PromoteRequest,
    RollbackRequest,
    VersionLineage,
    VersionMetadata,
)
from shared.serialization import ArtifactError, digest
from shared.signing import SignatureRefused, Verifier
from shared.vocabulary import Alias

DIGEST_HEADER = "X-Ctloop-Digest"
SIGNATURE_HEADER = "X-Ctloop-Signature"

_VERSIONS = TypeAdapter(list[ModelVersion])
_SUMMARIES = TypeAdapter(list[ModelSummary])
_HISTORY = TypeAdapter(list[AliasChange])
_ENVIRONMENTS = TypeAdapter(list[EnvironmentInfo])


class RegistryError(RuntimeError):
    """The registry refused a request or could not be reached."""


class RegistryUnavailable(RegistryError):
    """The registry could not answer now (unreachable, timed out, or a server error)."""


class RegistryRefused(RegistryError):
    """The registry answered the request with a refusal (4xx): repeating it will not help."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ModelVersions(Protocol):
    """What the trainer and serving read from the registry (tests implement it with fakes)."""

    verifier: Verifier | None

    def version(self, name: str, version: int) -> ModelVersion | None: ...

    def versions(self, name: str) -> list[ModelVersion]: ...

    def alias(self, name: str, alias: str = Alias.CHAMPION) -> ModelVersion | None: ...

    def artifact(self, name: str, version: ModelVersion) -> bytes: ...

    def stage(self, artifact: bytes) -> None: ...

    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion: ...


class RegistryClient:
    """`token`: the caller's role token (any role's may read). `verifier` is needed to download
    artifacts: every version's signature is checked."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        verifier: Verifier | None = None,
    ) -> None:
        self.verifier = verifier
        self.bases = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not self.bases:
            raise ValueError("no registry URL given")
        self._at = 0
        """The replica that answered last."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(headers=headers, timeout=timeout_s)
        self._staging = ThreadPoolExecutor(1, thread_name_prefix="registry-stage")
        self._staged: tuple[str, Future[bool]] | None = None
        """The artifact sent last by `stage` (its digest), and whether the registry took it."""

    def close(self) -> None:
        self._staging.shutdown(wait=True)
        self._http.close()

    # --- reads ---------------------------------------------------------------------------

    def models(self) -> list[ModelSummary]:
        return _SUMMARIES.validate_json(self._get("/v1/models"))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`; refused (404) when there is no such model."""
        return _VERSIONS.validate_json(self._get(f"/v1/models/{name}/versions"))

    def version(self, name: str, version: int) -> ModelVersion | None:
        found = self._find(f"/v1/models/{name}/versions/{version}")
        return None if found is None else ModelVersion.model_validate_json(found)

    def alias(self, name: str, alias: str = Alias.CHAMPION) -> ModelVersion | None:
        """The version an alias points at, or None when it points nowhere (cold start)."""
        found = self._find(f"/v1/models/{name}/aliases/{alias}")
        return None if found is None else ModelVersion.model_validate_json(found)

    def lineage(self, name: str, version: int) -> VersionLineage:
        return VersionLineage.model_validate_json(self._get(f"/v1/models/{name}/versions/{version}/lineage"))

    def history(self, name: str, environment: str | None = None) -> list[AliasChange]:
        query = f"?environment={environment}" if environment else ""
        return _HISTORY.validate_json(self._get(f"/v1/models/{name}/history{query}"))

    def environments(self) -> list[EnvironmentInfo]:
        return _ENVIRONMENTS.validate_json(self._get("/v1/environments"))

    def artifact(self, name: str, version: ModelVersion) -> bytes:
        response = self._request("GET", f"/v1/models/{name}/versions/{version.version}/artifact")
        if response.status_code == 404:
            raise RegistryRefused(f"artifact of {name} v{version.version} not found", 404)
        data = response.content
        if digest(data) != version.digest or response.headers.get(DIGEST_HEADER) != version.digest:
            raise ArtifactError(f"artifact of {name} v{version.version} does not match its digest")
        check_signature(self.verifier, name, version)
        if response.headers.get(SIGNATURE_HEADER) != version.signature:
            raise ArtifactError(f"artifact of {name} v{version.version} came with another signature")
        return data

    def role_of(self, token: str) -> str | None:
        """The registry's answer to whose `token` this is (a role), None when it is no role's."""
        try:
            response = self._request("GET", "/v1/auth", headers={"Authorization": f"Bearer {token}"})
        except RegistryRefused as exc:
            if exc.status_code in (401, 403):
                return None
            raise
        role = response.json().get("role") if response.status_code == 200 else None
        return role if isinstance(role, str) else None

    # --- writes --------------------------------------------------------------------------

    def stage(self, artifact: bytes) -> None:
        """Start sending an artifact ahead of its version, in the background: the registry
        verifies it (a full load) while the caller does other work, and an `upload` of the same
        bytes then sends the metadata alone. An artifact never uploaded is forgotten by the
        registry; one it did not take is sent again with its version.

        NOTE: measured with the trainer (50,000 rows, HistGradientBoosting), the registry's
        verification load (~20 ms) ran beside the trainer's gates instead of after them."""
        artifact_digest = digest(artifact)
        self._staged = (artifact_digest, self._staging.submit(self._stage, artifact, artifact_digest))

    def _stage(self, artifact: bytes, artifact_digest: str) -> bool:
        try:
            response = self._send(
                "PUT",
                f"/v1/artifacts/{artifact_digest}",
                content=artifact,
                headers={"Content-Type": "application/octet-stream"},
            )
        except RegistryError:
            return False  # the upload sends it with the version, and reports what is wrong
        # Anything else than 201 (a refusal; a 404 from a registry older than staging): the
        # upload sends the artifact with the version.
        return response.status_code == 201

    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion:
        """Register a version with its artifact: the metadata alone when the artifact was
        staged (`stage`) and the registry took it, else both in one multipart form."""
        staged, self._staged = self._staged, None
        if staged is not None and staged[0] == metadata.digest and staged[1].result():
            try:
                return self._write(f"/v1/models/{name}/versions", metadata)
            except RegistryRefused as exc:
                if exc.status_code != 409:  # 409: not staged on the replica that answered
                    raise
        return self._write(
            f"/v1/models/{name}/versions",
            files={"artifact": ("model.skops", artifact, "application/octet-stream")},
            data={"metadata": metadata.model_dump_json()},
        )

    def promote(
        self,
        name: str,
        version: int,
        alias: str = Alias.CHAMPION,
        reason: str = "manual",
        replaces: int | None = None,
        override_rollback: bool = False,
        environment: str | None = None,
    ) -> ModelVersion:
        """Point `alias` (or `environment`'s alias) at `version` (`replaces`: only if it points
        at that version now)."""
        body = PromoteRequest(
            alias=alias,
            reason=reason[:200],
            replaces=replaces,
            override_rollback=override_rollback,
            environment=environment,
        )
        return self._write(f"/v1/models/{name}/versions/{version}/promote", body)

    def approve(
        self,
        name: str,
        version: int,
        replaces: int | None = None,
        override_rollback: bool = False,
        environment: str = PRODUCTION,
        reason: str = "approved",
    ) -> ModelVersion:
        """A person's approval for an environment (production: the version becomes champion)."""
        body = ApproveRequest(
            replaces=replaces,
            override_rollback=override_rollback,
            environment=environment,
            reason=reason[:200],
        )
        return self._write(f"/v1/models/{name}/versions/{version}/approve", body)

    def rollback(
        self,
        name: str,
        reason: str = "manual rollback",
        replaces: int | None = None,
        environment: str = PRODUCTION,
    ) -> ModelVersion:
        """Make an environment's previous version (production's: the champion) its version
        again (`replaces`: only if it is that version now)."""
        body = RollbackRequest(reason=reason[:200], replaces=replaces, environment=environment)
        return self._write(f"/v1/models/{name}/rollback", body)

    # --- the wire ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """The first answer of the replicas, from the one that answered last on."""
        failures: list[str] = []
        for step in range(len(self.bases)):
            at = (self._at + step) % len(self.bases)
            try:
                response = self._http.request(method, self.bases[at] + path, **kwargs)  # type: ignore[arg-type]
            except httpx.HTTPError as exc:
                failures.append(f"{self.bases[at]}: {type(exc).__name__}: {exc}")
                if method == "GET" or isinstance(exc, httpx.ConnectError):
                    continue
                break
            self._at = at
            return response
        raise RegistryUnavailable(f"registry unreachable: {'; '.join(failures)}")

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 500:
            raise RegistryUnavailable(f"{method} {path}: {response.status_code} {response.text[:300]}")
        if response.status_code >= 400 and response.status_code != 404:
            raise RegistryRefused(
                f"{method} {path}: {response.status_code} {response.text[:300]}", response.status_code
            )
        return response

    def _find(self, path: str) -> bytes | None:
        """The body of a GET, or None when the registry has nothing there (404)."""
        response = self._request("GET", path)
        return None if response.status_code == 404 else response.content

    def _get(self, path: str) -> bytes:
        """The body of a GET; a 404 is a refusal (with the registry's reason)."""
        response = self._request("GET", path)
        if response.status_code == 404:
            raise RegistryRefused(f"GET {path}: {_detail(response)}", 404)
        return response.content

    def _write(self, path: str, body: BaseModel | None = None, **kwargs: object) -> ModelVersion:
        if body is not None:
            kwargs["content"] = body.model_dump_json()
            kwargs["headers"] = {"Content-Type": "application/json"}
        response = self._request("POST", path, **kwargs)
        if response.status_code == 404:
            raise RegistryRefused(f"POST {path}: {_detail(response)}", 404)
        return ModelVersion.model_validate_json(response.content)


def check_signature(verifier: Verifier | None, name: str, version: ModelVersion) -> None:
    """ArtifactError unless `version` carries the registry's signature over exactly it (its
    name, number, digest and input schema)."""
    if verifier is None:
        raise ArtifactError("no signing public key configured: versions cannot be verified")
    if version.name != name:
        raise ArtifactError(f"asked for {name}, the registry answered a version of {version.name}")
    try:
        verifier.check(
            name,
            version.version,
            version.digest,
            version.input_schema.model_dump(mode="json"),
            version.signature,
        )
    except SignatureRefused as exc:
        raise ArtifactError(str(exc)) from None


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:300]
