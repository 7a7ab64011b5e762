"""Content-addressed artifact store: bytes filed under their sha256, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from shared.serialization import digest


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, artifact_digest: str) -> Path:
        algo, _, hexdigest = artifact_digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise ValueError(f"not a sha256 digest: {artifact_digest!r}")
        return self.root / hexdigest[:2] / hexdigest

    def put(self, data: bytes) -> str:
        """Store bytes; return their digest. Storing the same bytes twice is a no-op."""
        artifact_digest = digest(data)
        path = self._path(artifact_digest)
        if path.exists():
            return artifact_digest
        path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: write to a temp file in the same folder and rename, so a crash never leaves
        # a half-written artifact under a real digest.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return artifact_digest

    def get(self, artifact_digest: str) -> bytes:
        return self._path(artifact_digest).read_bytes()
