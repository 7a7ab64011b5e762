"""Content-addressed artifact stores: bytes filed under their sha256, written atomically.

`ArtifactStore` keeps them in a local folder by default, or under any fsspec URL whose
filesystem is installed (`memory://…`; `s3://…` and `gs://…` need `s3fs` and `gcsfs`, which
the image does not ship). Bytes are written under a temporary name and moved into place, so a
crash never leaves a half-written artifact under a real digest.

`DatabaseArtifacts` (`CTLOOP_REGISTRY_ARTIFACT_URL=database`) keeps them in the registry's own
database, the one store registry replicas share already: a version uploaded through one
replica is downloaded through any other, with no object store to run, secure and back up
beside PostgreSQL. NOTE: models here are 0.1-10 MB (a PostgreSQL `bytea` holds up to 1 GB);
the row is written before the version's row, so a version never names a missing artifact.

>>> store = ArtifactStore("memory://doctest-artifacts")
>>> key = store.put(b"model bytes")
>>> store.get(key), store.put(b"model bytes") == key
(b'model bytes', True)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import fsspec
from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from shared.serialization import digest

STAGED_KEPT = 2
"""Staged artifacts a registry holds in memory at once (the newest): the trainer stages one per
run and registers or forgets it within seconds."""
STAGED_TTL_S = 600.0
"""A staged artifact no version named within this long is dropped."""

log = logging.getLogger(__name__)

DATABASE = "database"
"""The `CTLOOP_REGISTRY_ARTIFACT_URL` that puts artifacts in the registry's database."""

artifacts = Table(
    "artifacts",
    MetaData(),
    Column("digest", String(80), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class Artifacts(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes; return their digest. Storing the same bytes twice is a no-op."""
        ...

    def get(self, artifact_digest: str) -> bytes:
        """The bytes of a digest; FileNotFoundError when the store does not have them."""
        ...


def open_artifacts(location: str | Path, engine: Engine, folder: Path) -> Artifacts:
    """The store `CTLOOP_REGISTRY_ARTIFACT_URL` names (`location`; empty: the registry's
    `folder`): the registry's database (`database`), or a folder or fsspec URL. A registry moved
    from its folder to the database copies what the folder holds into it first, so versions
    registered before the move stay downloadable through every replica."""
    if str(location) != DATABASE:
        return ArtifactStore(location or folder)
    store = DatabaseArtifacts(engine)
    if folder.is_dir():
        copied = store.copy_from(ArtifactStore(folder))
        if copied:
            log.warning(
                "copied %d artifacts from %s into the database; the folder is no longer read", copied, folder
            )
    return store


def _checked(artifact_digest: str) -> str:
    algo, _, hexdigest = artifact_digest.partition(":")
    if algo != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"not a sha256 digest: {artifact_digest!r}")
    return hexdigest


class DatabaseArtifacts:
    """Artifacts as rows of the registry database's `artifacts` table (migration 0006)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, data: bytes) -> str:
        artifact_digest = digest(data)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(artifacts).values(
                        digest=artifact_digest, size=len(data), data=data, created_at=datetime.now(UTC)
                    )
                )
        except IntegrityError:
            pass  # the same bytes, stored already (by this replica or another)
        return artifact_digest

    def copy_from(self, folder: ArtifactStore) -> int:
        """Put every artifact of `folder` here (those here already are kept); how many were new."""
        with self.engine.connect() as conn:
            present = set(conn.execute(select(artifacts.c.digest)).scalars())
        copied = 0
        for artifact_digest in folder.digests():
            if artifact_digest not in present:
                self.put(folder.get(artifact_digest))
                copied += 1
        return copied

    def get(self, artifact_digest: str) -> bytes:
        _checked(artifact_digest)
        with self.engine.connect() as conn:
            data = conn.execute(
                select(artifacts.c.data).where(artifacts.c.digest == artifact_digest)
            ).scalar()
        if data is None:
            raise FileNotFoundError(f"no artifact {artifact_digest} in the database")
        return bytes(data)


class ArtifactStore:
    def __init__(self, location: str | Path) -> None:
        location = str(location)
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        self.fs, self.root = fsspec.core.url_to_fs(location)
        self.location = location

    def _path(self, artifact_digest: str) -> str:
        hexdigest = _checked(artifact_digest)
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

    def digests(self) -> list[str]:
        """The digests of every artifact stored here."""
        names = (path.rsplit("/", 1)[-1] for path in self.fs.find(self.root))
        return [f"sha256:{name}" for name in names if len(name) == 64 and not name.startswith(".")]


class StagedArtifacts:
    """Verified artifacts sent ahead of their version (`PUT /v1/artifacts/{digest}`), held in
    this process's memory until a version names them.

    The trainer sends its artifact as soon as it is serialized, so the registry verifies it
    (a full load) while the trainer runs its gates; the version's registration then sends the
    metadata alone. They are kept in memory, not in the store: a candidate that fails its
    gates is never registered, and must not leave bytes behind. A registry that restarts, or
    a replica other than the one that verified them, does not have them: the version is then
    refused with 409 and the client sends the artifact with it.
    """

    def __init__(self, kept: int = STAGED_KEPT, ttl_s: float = STAGED_TTL_S) -> None:
        self.kept, self.ttl_s = kept, ttl_s
        self._staged: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, artifact_digest: str, data: bytes) -> None:
        """Hold verified bytes under their digest (the newest `kept`)."""
        with self._lock:
            self._staged.pop(artifact_digest, None)
            self._staged[artifact_digest] = (time.monotonic(), data)
            while len(self._staged) > self.kept:
                self._staged.popitem(last=False)

    def take(self, artifact_digest: str) -> bytes | None:
        """The staged bytes of a digest, no longer held; None when they are not here (never
        staged, dropped, or staged longer ago than `ttl_s`)."""
        with self._lock:
            staged = self._staged.pop(artifact_digest, None)
        if staged is None or time.monotonic() - staged[0] > self.ttl_s:
            return None
        return staged[1]
