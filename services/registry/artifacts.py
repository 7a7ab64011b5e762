"""Content-addressed artifact store: bytes filed under their sha256, written atomically.

The store is a local folder by default, or any fsspec URL (`s3://bucket/ctloop`,
`gs://…`, `memory://…`) when the stack spans machines. Bytes are written under a temporary
name and moved into place, so a crash never leaves a half-written artifact under a real digest.

>>> store = ArtifactStore("memory://doctest-artifacts")
>>> key = store.put(b"model bytes")
>>> store.get(key), store.put(b"model bytes") == key
(b'model bytes', True)
"""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec

from shared.serialization import digest


class ArtifactStore:
    def __init__(self, location: str | Path) -> None:
        location = str(location)
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        self.fs, self.root = fsspec.core.url_to_fs(location)
        self.location = location

    def _path(self, artifact_digest: str) -> str:
        algo, _, hexdigest = artifact_digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise ValueError(f"not a sha256 digest: {artifact_digest!r}")
        return f"{self.root.rstrip('/')}/{hexdigest[:2]}/{hexdigest}"

    def put(self, data: bytes) -> str:
        """Store bytes; return their digest. Storing the same bytes twice is a no-op."""
        artifact_digest = digest(data)
        path = self._path(artifact_digest)
        if self.fs.exists(path):
            return artifact_digest
        folder = path.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        temporary = f"{folder}/.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open(temporary, "wb") as out:
                out.write(data)
            self.fs.mv(temporary, path)
        finally:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
        return artifact_digest

    def get(self, artifact_digest: str) -> bytes:
        """The bytes of a digest; FileNotFoundError when the store does not have them."""
        return self.fs.cat_file(self._path(artifact_digest))  # type: ignore[no-any-return]
