"""Content-addressed artifact store: model files are named by their sha256 and checked on every read.

A model is referred to everywhere (candidate events, the registry, the scorer) by its digest, so a file that
changed on disk, by corruption or by tampering, cannot be served: :meth:`ArtifactStore.get` recomputes the
digest and raises :class:`ArtifactIntegrityError` rather than return different bytes.

The store is a port with a directory-backed implementation (what the platform runs) and an in-memory one
(for unit tests of the services that use it). It depends on nothing but the standard library, so the
scorer and the registry can use it without the training stack.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

ALGORITHM = "sha256"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """Base class of artifact store errors."""


class ArtifactNotFoundError(ArtifactError, LookupError):
    """No artifact is stored under this digest."""


class ArtifactIntegrityError(ArtifactError):
    """The stored bytes no longer hash to the digest they are stored under."""

    def __init__(self, expected: str, actual: str, location: str) -> None:
        super().__init__(f"artifact {location} has sha256 {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual
        self.location = location


def sha256_digest(data: bytes) -> str:
    """The digest artifacts are addressed by: lower-case hex sha256 of the bytes."""
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Validate a digest's form, which also keeps it from naming any path outside the store."""
    if not _DIGEST.match(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


@runtime_checkable
class ArtifactStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its digest."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes under ``digest``, verified; raises ArtifactNotFoundError or ArtifactIntegrityError."""
        ...

    def exists(self, digest: str) -> bool: ...

    def location(self, digest: str) -> str:
        """Where the artifact lives, as a URI to record with a model version."""
        ...


class DirectoryArtifactStore:
    """Artifacts as files ``<root>/sha256/<first two hex digits>/<digest>``.

    Writes go to a temporary file in the target folder, are flushed to disk, then renamed into place: a
    reader sees either no file or the complete file, never a partial one, even if the writer crashes.
    Writing the same bytes twice is harmless, and a stored file that fails its check is replaced by ``put``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / ALGORITHM / digest[:2] / digest

    def location(self, digest: str) -> str:
        return self.path(digest).resolve().as_uri()

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, data: bytes) -> str:
        digest = sha256_digest(data)
        target = self.path(digest)
        if target.is_file() and sha256_digest(target.read_bytes()) == digest:
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{digest[:12]}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are read by other services
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest

    def get(self, digest: str) -> bytes:
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact {digest} in {self.root}") from None
        actual = sha256_digest(data)
        if actual != digest:
            raise ArtifactIntegrityError(digest, actual, str(target))
        return data


class InMemoryArtifactStore:
    """The same contract held in a dict, for unit tests; ``blobs`` is exposed so tests can corrupt it."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = sha256_digest(data)
        self.blobs[digest] = bytes(data)
        return digest

    def get(self, digest: str) -> bytes:
        check_digest(digest)
        try:
            data = self.blobs[digest]
        except KeyError:
            raise ArtifactNotFoundError(f"no artifact {digest} in memory") from None
        actual = sha256_digest(data)
        if actual != digest:
            raise ArtifactIntegrityError(digest, actual, self.location(digest))
        return data

    def exists(self, digest: str) -> bool:
        return check_digest(digest) in self.blobs

    def location(self, digest: str) -> str:
        return f"memory://{ALGORITHM}/{check_digest(digest)}"


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
