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
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tollgate_audit_log.canonical import canonical_json, micros

log = logging.getLogger(__name__)


ZERO_HASH = bytes(32)


@dataclass(frozen=True, slots=True)
class Statement:
    """What a checkpoint signs: a signed tree head that chains to the one before it.

    ``merkle_root`` is the root over the rows ``first_seq..last_seq`` (what a receipt's audit path leads
    to); ``tree_root`` the RFC 6962 root over every row of the stream, ``1..last_seq`` (the tree head);
    ``prev_root`` the tree root of the previous checkpoint (the tree of ``first_seq - 1`` rows) and
    ``prev_statement`` the sha256 of its signed message, so the heads form a chain a verifier can walk with
    consistency proofs. Statements without a tree root are the first format (range roots only).
    """

    stream: str
    first_seq: int
    last_seq: int
    merkle_root: bytes
    head_hash: bytes
    created_at: datetime
    key_id: str
    tree_root: bytes | None = None
    prev_root: bytes | None = None
    prev_statement: bytes | None = None

    def digest(self) -> bytes:
        """What the next checkpoint names as ``prev_statement``."""
        return hashlib.sha256(self.message()).digest()

    def message(self) -> bytes:
        if self.tree_root is not None:
            return canonical_json(
                {
                    "format": "tollgate-audit-checkpoint/2",
                    "stream": self.stream,
                    "first_seq": self.first_seq,
                    "last_seq": self.last_seq,
                    "merkle_root": self.merkle_root.hex(),
                    "head_hash": self.head_hash.hex(),
                    "tree_size": self.last_seq,
                    "tree_root": self.tree_root.hex(),
                    "prev_root": (self.prev_root or ZERO_HASH).hex(),
                    "prev_statement": (self.prev_statement or ZERO_HASH).hex(),
                    "created_at_us": micros(self.created_at),
                    "key_id": self.key_id,
                }
            )
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


TRUSTED_KEYS_ENV = "TOLLGATE_AUDIT_TRUSTED_KEYS"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.DOTALL)


def load_trusted_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys pinned by the operator: a file of one or more PEM blocks (public keys, or private
    keys whose public half is meant). Refuses a file without any."""
    data = path.read_bytes()
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.finditer(data):
        pem = block.group(0)
        if b"PRIVATE KEY" in pem:
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"{path} holds a key that is not Ed25519")
            public = private.public_key()
        else:
            loaded = serialization.load_pem_public_key(pem)
            if not isinstance(loaded, Ed25519PublicKey):
                raise ValueError(f"{path} holds a key that is not Ed25519")
            public = loaded
        keys[key_id(public)] = public
    if not keys:
        raise ValueError(f"{path} holds no PEM public key")
    return keys


def pinned_keys(paths: list[Path] | None = None) -> dict[str, Ed25519PublicKey] | None:
    """Keys from the given files, else from the file named by ``TOLLGATE_AUDIT_TRUSTED_KEYS``; None when
    neither is given (a verifier then has no trust anchor and must not report OK)."""
    chosen = list(paths or [])
    if not chosen and os.environ.get(TRUSTED_KEYS_ENV):
        chosen = [Path(p) for p in os.environ[TRUSTED_KEYS_ENV].split(os.pathsep) if p]
    if not chosen:
        return None
    keys: dict[str, Ed25519PublicKey] = {}
    for path in chosen:
        keys.update(load_trusted_keys(path))
    return keys


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """The previous signing key's signed statement that a new key signs checkpoints from now on."""

    previous_key_id: str
    new_public_key: bytes  # raw Ed25519
    created_at: datetime

    @property
    def new_key_id(self) -> str:
        return hashlib.sha256(self.new_public_key).hexdigest()[:16]

    def message(self) -> bytes:
        return canonical_json(
            {
                "format": "tollgate-audit-key-rotation/1",
                "previous_key_id": self.previous_key_id,
                "new_key_id": self.new_key_id,
                "new_public_key": self.new_public_key.hex(),
                "created_at_us": micros(self.created_at),
            }
        )


def sign_rotation(
    previous: Ed25519PrivateKey, new_key: Ed25519PublicKey, at: datetime
) -> tuple[KeyRotation, bytes]:
    rotation = KeyRotation(key_id(previous.public_key()), public_bytes(new_key), at)
    return rotation, previous.sign(rotation.message())


def follow_rotations(
    pinned: dict[str, Ed25519PublicKey], rotations: list[tuple[KeyRotation, bytes]]
) -> dict[str, Ed25519PublicKey]:
    """The pinned keys plus every key a trusted key handed over to with a valid signed rotation (in any
    order, transitively). A rotation signed by an untrusted key adds nothing."""
    trusted = dict(pinned)
    changed = True
    while changed:
        changed = False
        for rotation, signature in rotations:
            if rotation.new_key_id in trusted:
                continue
            previous = trusted.get(rotation.previous_key_id)
            if previous is None:
                continue
            try:
                previous.verify(signature, rotation.message())
            except InvalidSignature:
                continue
            trusted[rotation.new_key_id] = public_key_from_raw(rotation.new_public_key)
            changed = True
    return trusted
