"""The registry's HTTP client, used by the trainer (upload), serving (artifacts) and the
monitor (reference profiles). It verifies every artifact's digest before handing it out."""

from __future__ import annotations

import json

import httpx

from shared.registry_api import ModelVersion, VersionMetadata
from shared.serialization import ArtifactError, digest
from shared.signing import verify

DIGEST_HEADER = "X-Ctloop-Digest"
SIGNATURE_HEADER = "X-Ctloop-Signature"


class RegistryError(RuntimeError):
    """The registry refused a request or could not be reached."""


class RegistryClient:
    """`signing_key` is needed to download artifacts: every artifact's signature is checked."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout_s: float = 10.0, signing_key: str | None = None
    ) -> None:
        self.signing_key = signing_key
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry unreachable: {exc}") from exc
        if response.status_code >= 400 and response.status_code != 404:
            raise RegistryError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response

    def version(self, name: str, version: int) -> ModelVersion | None:
        response = self._request("GET", f"/v1/models/{name}/versions/{version}")
        return None if response.status_code == 404 else ModelVersion.model_validate_json(response.content)

    def alias(self, name: str, alias: str = "champion") -> ModelVersion | None:
        """The version an alias points at, or None when it points nowhere (cold start)."""
        response = self._request("GET", f"/v1/models/{name}/aliases/{alias}")
        return None if response.status_code == 404 else ModelVersion.model_validate_json(response.content)

    def artifact(self, name: str, version: ModelVersion) -> bytes:
        response = self._request("GET", f"/v1/models/{name}/versions/{version.version}/artifact")
        if response.status_code == 404:
            raise RegistryError(f"artifact of {name} v{version.version} not found")
        data = response.content
        if digest(data) != version.digest or response.headers.get(DIGEST_HEADER) != version.digest:
            raise ArtifactError(f"artifact of {name} v{version.version} does not match its digest")
        if self.signing_key is None:
            raise ArtifactError("no signing key configured: artifacts cannot be verified")
        if not verify(self.signing_key, version.digest, version.signature) or not verify(
            self.signing_key, version.digest, response.headers.get(SIGNATURE_HEADER)
        ):
            raise ArtifactError(
                f"artifact of {name} v{version.version} is unsigned or its signature is wrong"
            )
        return data

    def upload(self, name: str, artifact: bytes, metadata: VersionMetadata) -> ModelVersion:
        response = self._request(
            "POST",
            f"/v1/models/{name}/versions",
            files={"artifact": ("model.skops", artifact, "application/octet-stream")},
            data={"metadata": metadata.model_dump_json()},
        )
        if response.status_code == 404:
            raise RegistryError(f"upload of {name}: 404")
        return ModelVersion.model_validate_json(response.content)

    def promote(self, name: str, version: int, alias: str = "champion") -> ModelVersion:
        response = self._request(
            "POST", f"/v1/models/{name}/versions/{version}/promote", json={"alias": alias}
        )
        if response.status_code == 404:
            raise RegistryError(f"{name} v{version} not found")
        return ModelVersion.model_validate_json(response.content)

    def post(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        """A write to the registry (approve, rollback, archive, aliases); raises on refusal."""
        response = self._request("POST", path, json=body or {})
        if response.status_code == 404:
            raise RegistryError(f"POST {path}: {response.json().get('detail')}")
        return response.json()  # type: ignore[no-any-return]

    def get(self, path: str) -> object:
        response = self._request("GET", path)
        if response.status_code == 404:
            raise RegistryError(f"GET {path}: {response.json().get('detail')}")
        return response.json()

    def versions(self, name: str) -> list[ModelVersion]:
        response = self._request("GET", f"/v1/models/{name}/versions")
        if response.status_code == 404:
            return []
        return [ModelVersion.model_validate(v) for v in json.loads(response.content)]
