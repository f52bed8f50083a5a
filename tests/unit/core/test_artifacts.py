"""The artifact store addresses bytes by sha256 and refuses to return bytes that no longer match."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tollgate_core.artifacts import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
    DirectoryArtifactStore,
    InMemoryArtifactStore,
    sha256_digest,
)

PAYLOAD = b"onnx model bytes \x00\x01\x02"


@pytest.fixture(params=["directory", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "directory":
        return DirectoryArtifactStore(tmp_path / "artifacts")
    return InMemoryArtifactStore()


def test_put_returns_sha256_and_get_returns_the_bytes(store: ArtifactStore) -> None:
    digest = store.put(PAYLOAD)
    assert digest == hashlib.sha256(PAYLOAD).hexdigest() == sha256_digest(PAYLOAD)
    assert store.exists(digest)
    assert store.get(digest) == PAYLOAD


def test_put_is_idempotent(store: ArtifactStore) -> None:
    assert store.put(PAYLOAD) == store.put(PAYLOAD)
    assert store.get(sha256_digest(PAYLOAD)) == PAYLOAD


def test_missing_artifact_is_not_found(store: ArtifactStore) -> None:
    digest = sha256_digest(b"never stored")
    assert not store.exists(digest)
    with pytest.raises(ArtifactNotFoundError):
        store.get(digest)


@pytest.mark.parametrize("bad", ["", "abc", "../" * 10 + "etc/passwd", "A" * 64, "g" * 64])
def test_malformed_digests_are_refused(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.get(bad)


def test_directory_layout_and_location(tmp_path: Path) -> None:
    store = DirectoryArtifactStore(tmp_path)
    digest = store.put(PAYLOAD)
    path = tmp_path / "sha256" / digest[:2] / digest
    assert path.read_bytes() == PAYLOAD
    assert store.location(digest) == path.resolve().as_uri()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # Atomic writes leave no temporary file behind.
    assert sorted(p.name for p in path.parent.iterdir()) == [digest]


def test_tampered_file_raises_integrity_error(tmp_path: Path) -> None:
    store = DirectoryArtifactStore(tmp_path)
    digest = store.put(PAYLOAD)
    path = store.path(digest)
    path.write_bytes(PAYLOAD[:-1] + b"\xff")
    with pytest.raises(ArtifactIntegrityError) as caught:
        store.get(digest)
    assert caught.value.expected == digest
    assert caught.value.actual == sha256_digest(path.read_bytes())
    # Putting the genuine bytes again repairs the file.
    store.put(PAYLOAD)
    assert store.get(digest) == PAYLOAD


def test_truncated_file_raises_integrity_error(tmp_path: Path) -> None:
    store = DirectoryArtifactStore(tmp_path)
    digest = store.put(PAYLOAD)
    store.path(digest).write_bytes(b"")
    with pytest.raises(ArtifactIntegrityError):
        store.get(digest)


def test_in_memory_store_verifies_too() -> None:
    store = InMemoryArtifactStore()
    digest = store.put(PAYLOAD)
    store.blobs[digest] = b"something else"
    with pytest.raises(ArtifactIntegrityError):
        store.get(digest)


def test_both_implementations_satisfy_the_port(tmp_path: Path) -> None:
    assert isinstance(DirectoryArtifactStore(tmp_path), ArtifactStore)
    assert isinstance(InMemoryArtifactStore(), ArtifactStore)


def test_core_data_modules_do_not_import_the_training_stack() -> None:
    """The scorer and registry use these modules and must install without scikit-learn or pandas."""
    code = (
        "import sys, tollgate_core.artifacts, tollgate_demo.datasets as d; d.load_islp_default();"
        "bad = [m for m in ('sklearn', 'pandas', 'onnx', 'skl2onnx', 'ISLP') if m in sys.modules];"
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
