"""Merkle tree over row hashes, as in Certificate Transparency (RFC 6962, section 2.1).

Leaves and inner nodes are hashed with different prefixes (0x00 / 0x01) so a leaf can never pass for a
node. The root of a checkpoint lets anyone prove that one row was part of a signed range with a path of
``log2(n)`` hashes, without the other rows; the chain alone would need every row before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_LEAF = b"\x00"
_NODE = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over ``leaves`` (each a row hash), computed level by level.

    Pairing neighbours and carrying an odd last node up unchanged gives the same root as RFC 6962's
    recursive split at the largest power of two (the left subtrees are complete in both).
    """
    if not leaves:
        return EMPTY_ROOT
    sha = hashlib.sha256
    level = [sha(_LEAF + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        nxt = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (RFC 6962 audit path)."""
    if not 0 <= index < len(leaves):
        raise IndexError(index)
    return _path(index, [leaf_hash(x) for x in leaves])


def _subtree(nodes: Sequence[bytes]) -> bytes:
    if len(nodes) == 1:
        return nodes[0]
    k = _split(len(nodes))
    return hashlib.sha256(_NODE + _subtree(nodes[:k]) + _subtree(nodes[k:])).digest()


def _split(n: int) -> int:
    """Largest power of two smaller than ``n``."""
    return 1 << ((n - 1).bit_length() - 1)


def _path(index: int, nodes: Sequence[bytes]) -> list[bytes]:
    if len(nodes) <= 1:
        return []
    k = _split(len(nodes))
    if index < k:
        return [*_path(index, nodes[:k]), _subtree(nodes[k:])]
    return [*_path(index - k, nodes[k:]), _subtree(nodes[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``leaf`` is the ``index``-th of ``size`` leaves under ``root`` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    node = leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = hashlib.sha256(_NODE + sibling + node).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = hashlib.sha256(_NODE + node + sibling).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root
