"""Per-decision receipts: proof that one row was recorded, unchanged, under a signed checkpoint.

A receipt holds the row exactly as hashed (every content field, the envelope text), its content hash,
previous hash and row hash, the leaf hash, the RFC 6962 audit path from the leaf to the Merkle root of
the checkpoint's range, and the signed checkpoint (a tree head, as published to ``audit.checkpoints``).
:func:`verify_receipt` checks it with nothing but the receipt and the signer's public key: a compliance
team can hand it to a third party, who needs no access to the database.

What it proves: the row with these contents was at this seq of this stream when the checkpoint was signed
(``created_at_us``), by the key the verifier trusts. Refused: a changed field (content hash), a wrong link
(row hash), a wrong path or index, a checkpoint that does not cover the row (a stale or unrelated one),
another stream's checkpoint, a root the signature does not cover, an untrusted key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tollgate_audit_log.canonical import content_hash, link
from tollgate_audit_log.chain import Checkpoint, statement_of
from tollgate_audit_log.merkle import (
    BLOCK_HEIGHT,
    inclusion_proof,
    inclusion_proof_from_blocks,
    leaf_hash,
    verify_inclusion,
)
from tollgate_audit_log.publish import head_event, head_from_payload
from tollgate_audit_log.signing import Statement, verify_statement
from tollgate_core.audit_heads import TreeHeadPayload

FORMAT = "tollgate-audit-receipt/1"
# Columns of a receipt's row, as the content hash takes them (timestamps as microseconds).
RECEIPT_SQL = """
SELECT stream, seq, event_id::text AS event_id, topic, kafka_partition, kafka_offset, event_type,
       (extract(epoch FROM occurred_at) * 1000000)::bigint AS occurred_at_us,
       (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at_us,
       request_id, entity_id, model, version, trace_id, envelope, content_hash, prev_hash, row_hash
FROM audit_events
"""
_ROW_FIELDS = (
    "stream", "seq", "event_id", "topic", "kafka_partition", "kafka_offset", "event_type", "occurred_at_us",
    "recorded_at_us", "request_id", "entity_id", "model", "version", "trace_id", "envelope",
)  # fmt: skip


async def audit_path(conn: Any, stream: str, seq: int, row_hash: bytes, cp: Any) -> list[bytes]:
    """The RFC 6962 audit path of row ``seq`` (its ``row_hash``) to the range root of its checkpoint ``cp``
    (an ``audit_checkpoints`` row): from the 64 row hashes of the row's block and the checkpoint's stored
    block roots, checked against the signed ``merkle_root``; for a checkpoint without block roots (older
    ones), from every row of its range. ValueError when the rows no longer match the checkpoint."""
    stored = bytes(cp["block_roots"] or b"")
    roots = [stored[i : i + 32] for i in range(0, len(stored), 32)] or None
    first, last = int(cp["first_seq"]), int(cp["last_seq"])
    index = seq - first
    offset = (index >> BLOCK_HEIGHT) << BLOCK_HEIGHT if roots is not None else 0
    hi = min(last, first + offset + (1 << BLOCK_HEIGHT) - 1) if roots is not None else last
    leaves = [
        bytes(r[0])
        for r in await conn.fetch(
            "SELECT row_hash FROM audit_events WHERE stream = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
            stream,
            first + offset,
            hi,
        )
    ]
    if not 0 <= index - offset < len(leaves) or leaves[index - offset] != row_hash:
        raise ValueError(f"row {seq} is not at its place in checkpoint {cp['id']}")
    if roots is None:
        return inclusion_proof(leaves, index)
    path = inclusion_proof_from_blocks(leaves, index, roots)
    if not verify_inclusion(row_hash, index, last - first + 1, path, bytes(cp["merkle_root"])):
        raise ValueError(f"the stored block roots of checkpoint {cp['id']} do not lead to its signed root")
    return path


def build_receipt(row: Any, checkpoint: Checkpoint, path: Sequence[bytes]) -> dict[str, Any]:
    """``row`` (RECEIPT_SQL columns), its checkpoint and its audit path (:func:`audit_path`)."""
    st = checkpoint.statement
    index = int(row["seq"]) - st.first_seq
    out_row = {name: row[name] for name in _ROW_FIELDS}
    out_row.update(
        content_hash=bytes(row["content_hash"]).hex(),
        prev_hash=bytes(row["prev_hash"]).hex(),
        row_hash=bytes(row["row_hash"]).hex(),
    )
    return {
        "format": FORMAT,
        "row": out_row,
        "leaf_hash": leaf_hash(bytes(row["row_hash"])).hex(),
        "leaf_index": index,
        "tree_size": st.last_seq - st.first_seq + 1,
        "path": [h.hex() for h in path],
        "checkpoint": head_event(checkpoint).payload.model_dump(mode="json"),
    }


@dataclass
class Found:
    rows: int = 0
    receipts: list[dict[str, Any]] = field(default_factory=list)
    unsealed: list[tuple[str, int, str]] = field(default_factory=list)  # (stream, seq, event id)
    broken: str | None = None  # a row that no longer matches its checkpoint


async def receipts_for(conn: Any, request_id: str, *, limit: int = 100) -> Found:
    """Receipts for every row recorded under ``request_id`` (at most ``limit``)."""
    found = Found()
    rows = await conn.fetch(
        f"{RECEIPT_SQL} WHERE request_id = $1 ORDER BY stream, seq LIMIT $2", request_id, limit
    )
    found.rows = len(rows)
    for row in rows:
        cp = await conn.fetchrow(
            "SELECT * FROM audit_checkpoints WHERE stream = $1 AND first_seq <= $2 AND last_seq >= $2 "
            "AND tree_root IS NOT NULL",
            row["stream"],
            row["seq"],
        )
        if cp is None:
            found.unsealed.append((row["stream"], row["seq"], row["event_id"]))
            continue
        raw = bytes(cp["consistency"] or b"")
        checkpoint = Checkpoint(
            cp["id"],
            statement_of(cp),
            bytes(cp["signature"]),
            tuple(raw[i : i + 32] for i in range(0, len(raw), 32)),
        )
        try:
            path = await audit_path(conn, row["stream"], row["seq"], bytes(row["row_hash"]), cp)
            found.receipts.append(build_receipt(row, checkpoint, path))
        except ValueError as exc:  # the table no longer matches its checkpoint
            found.broken = f"seq {row['seq']} of {row['stream']}: {exc}"
    return found


@dataclass(frozen=True)
class ReceiptCheck:
    ok: bool
    detail: str
    stream: str | None = None
    seq: int | None = None
    event_id: str | None = None
    signed_at_us: int | None = None
    key_id: str | None = None


def verify_receipt(receipt: Any, trusted: dict[str, Ed25519PublicKey]) -> ReceiptCheck:
    """Check a receipt offline; never raises on a malformed one (it is refused, with why)."""
    try:
        return _verify(receipt, trusted)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return ReceiptCheck(False, f"not a valid receipt: {type(exc).__name__}: {exc}")


def _verify(receipt: Any, trusted: dict[str, Ed25519PublicKey]) -> ReceiptCheck:
    if not isinstance(receipt, dict) or receipt.get("format") != FORMAT:
        return ReceiptCheck(False, f"not a receipt ({FORMAT})")
    row = receipt["row"]
    head = head_from_payload(TreeHeadPayload.model_validate(receipt["checkpoint"]), "receipt")
    st: Statement = head.statement
    where = {"stream": row["stream"], "seq": int(row["seq"]), "event_id": row["event_id"]}

    def refuse(why: str) -> ReceiptCheck:
        return ReceiptCheck(False, why, **where)

    computed = content_hash(*(row[name] for name in _ROW_FIELDS))
    if computed.hex() != row["content_hash"]:
        return refuse("the row's fields do not hash to its content hash (the row was changed)")
    row_hash = link(bytes.fromhex(row["prev_hash"]), computed)
    if row_hash.hex() != row["row_hash"]:
        return refuse("the row hash is not sha256(prev_hash || content_hash)")
    if leaf_hash(row_hash).hex() != receipt["leaf_hash"]:
        return refuse("the leaf hash is not the row hash's RFC 6962 leaf")
    if st.stream != row["stream"]:
        return refuse(f"the checkpoint is of stream {st.stream}, not {row['stream']}")
    if not st.first_seq <= int(row["seq"]) <= st.last_seq:
        return refuse(
            f"the checkpoint covers seq {st.first_seq}..{st.last_seq}, not seq {row['seq']} (a stale or "
            "unrelated checkpoint)"
        )
    index, size = int(receipt["leaf_index"]), int(receipt["tree_size"])
    if index != int(row["seq"]) - st.first_seq or size != st.last_seq - st.first_seq + 1:
        return refuse("the leaf index or tree size does not match the row's place in the checkpoint")
    path = [bytes.fromhex(h) for h in receipt["path"]]
    if not verify_inclusion(row_hash, index, size, path, st.merkle_root):
        return refuse("the audit path does not lead from the row to the checkpoint's Merkle root")
    key = trusted.get(st.key_id)
    if key is None:
        return refuse(f"the checkpoint is signed by key {st.key_id}, which is not trusted")
    if not verify_statement(key, st, head.signature):
        return refuse("the checkpoint's signature does not verify (its statement was changed)")
    return ReceiptCheck(
        True,
        f"recorded: stream {st.stream} seq {row['seq']} (event {row['event_id']}) is in checkpoint "
        f"seq {st.first_seq}..{st.last_seq} signed by {st.key_id} at {st.created_at.isoformat()}",
        signed_at_us=int(receipt["checkpoint"]["created_at_us"]),
        key_id=st.key_id,
        **where,
    )
