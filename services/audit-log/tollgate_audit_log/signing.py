"""Ed25519 signatures over checkpoints.

A checkpoint statement names the stream, the seq range, the Merkle root of its row hashes and the row hash
of its last row (which, through the chain, commits to every row before it). Whoever holds only database
access can rewrite rows and even re-hash the whole chain consistently; they cannot sign a new statement
without the private key, which lives in a file outside the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tollgate_audit_log.canonical import canonical_json, micros

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Statement:
    """What a checkpoint signs."""

    stream: str
    first_seq: int
    last_seq: int
    merkle_root: bytes
    head_hash: bytes
    created_at: datetime
    key_id: str

    def message(self) -> bytes:
        return canonical_json(
            {
                "format": "tollgate-audit-checkpoint/1",
                "stream": self.stream,
                "first_seq": self.first_seq,
                "last_seq": self.last_seq,
                "merkle_root": self.merkle_root.hex(),
                "head_hash": self.head_hash.hex(),
                "created_at_us": micros(self.created_at),
                "key_id": self.key_id,
            }
        )


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Short, stable name of a public key: the first 16 hex digits of sha256 over its raw bytes."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, statement: Statement) -> bytes:
        return self._key.sign(statement.message())


def verify_statement(public_key: Ed25519PublicKey, statement: Statement, signature: bytes) -> bool:
    try:
        public_key.verify(signature, statement.message())
    except InvalidSignature:
        return False
    return True


def load_or_create_private_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """Read the PEM private key at ``path``; when absent and ``create``, generate one (mode 0600).

    Production must bring its own key (``create=False``): a key generated on the fly beside the service
    would sign whatever the host's attacker wants it to sign.
    """
    if not path.exists():
        if not create:
            raise FileNotFoundError(
                f"audit signing key {path} does not exist (generated only outside production)"
            )
        created = _create_private_key(path)
        if created is not None:
            return created
        # Another process created it between the check and the write: read theirs.
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded


def _create_private_key(path: Path) -> Ed25519PrivateKey | None:
    """Write a new key (mode 0600, never over an existing file); None when another process made it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    path.with_suffix(".pub").write_text(public_pem(key.public_key()), encoding="utf-8")
    log.warning(
        "generated a new audit signing key at %s (public key beside it, %s)", path, key_id(key.public_key())
    )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or the public half of a PEM private key."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return public


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)
