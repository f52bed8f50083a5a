"""Merkle tree over row hashes, as in Certificate Transparency (RFC 6962, section 2.1).

Leaves and inner nodes are hashed with different prefixes (0x00 / 0x01) so a leaf can never pass for a
node. The root of a checkpoint lets anyone prove that one row was part of a signed range with a path of
``log2(n)`` hashes, without the other rows; the chain alone would need every row before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from tollgate_audit_log import compiled

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
    """Sibling hashes from leaf ``index`` up to the root (RFC 6962 audit path).

    Level by level, as :func:`merkle_root` builds the same tree: at each level the node's neighbour in
    its pair is the next hash of the path; a last node without a neighbour is carried up unchanged and adds
    nothing. Each level is one list comprehension (a receipt over a 10,000-row checkpoint hashes about
    20,000 times; the recursive split recomputed subtrees through many Python calls)."""
    if not 0 <= index < len(leaves):
        raise IndexError(index)
    sha = hashlib.sha256
    level = [sha(_LEAF + leaf).digest() for leaf in leaves]
    path: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        nxt = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index >> 1
    return path


# Receipts: a checkpoint stores its range tree's nodes at this level (roots of blocks of 64 rows), so the
# audit path of one row needs the 64 row hashes of its block and those roots, not every row of the range.
BLOCK_HEIGHT = 6


def block_roots(leaves: Sequence[bytes], height: int = BLOCK_HEIGHT) -> list[bytes]:
    """Level ``height`` of the tree :func:`root_of_leaf_hashes` builds over ``leaves`` (leaf hashes): the
    roots of the blocks of ``2**height`` leaves, the last, shorter block's root as the tree carries it up."""
    level = list(leaves)
    for _ in range(height):
        if len(level) <= 1:
            break
        level = _parent_level(level)
    return level


def inclusion_proof_from_blocks(
    block: Sequence[bytes], index: int, roots: Sequence[bytes], height: int = BLOCK_HEIGHT
) -> list[bytes]:
    """:func:`inclusion_proof` of leaf ``index`` of a range, from the row hashes of its block (``block``:
    rows ``(index >> height) << height`` onwards, at most ``2**height``) and the range's block roots
    (:func:`block_roots`): the path inside the block, then the path over the roots. Equal to the path over
    the whole range (levels below ``height`` never pair nodes of two blocks)."""
    number = index >> height
    if not 0 <= number < len(roots):
        raise IndexError(index)
    path = inclusion_proof(block, index - (number << height))
    level, i = list(roots), number
    while len(level) > 1:
        if i ^ 1 < len(level):
            path.append(level[i ^ 1])
        level, i = _parent_level(level), i >> 1
    return path


def _split(n: int) -> int:
    """Largest power of two smaller than ``n``."""
    return 1 << ((n - 1).bit_length() - 1)


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


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


class Frontier:
    """The compact form of a growing log's Merkle tree: the roots of the perfect subtrees its ``size``
    leaves decompose into (one per set bit of ``size``, largest first). Appending a leaf costs one leaf hash
    and on average one node hash; the root of the whole log (RFC 6962) folds the list from the right.

    The writer keeps one per stream, so every checkpoint signs the root of the whole stream so far (a tree
    head) without reading the stream again; a frontier stored with a checkpoint is checked against the
    signed root before it is used.
    """

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of {size} leaves has {size.bit_count()} nodes, not {len(nodes)}")
        self.size = size
        self.nodes = list(nodes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)

    def append(self, row_hash: bytes) -> None:
        self.append_leaf_hash(hashlib.sha256(_LEAF + row_hash).digest())

    def append_leaf_hash(self, node: bytes) -> None:
        nodes, size, sha = self.nodes, self.size, hashlib.sha256
        while size & 1:
            node = sha(_NODE + nodes.pop() + node).digest()
            size >>= 1
        nodes.append(node)
        self.size += 1

    def extend(self, row_hashes: Sequence[bytes]) -> None:
        nodes, sha = self.nodes, hashlib.sha256
        size = self.size
        for row_hash in row_hashes:
            node = sha(_LEAF + row_hash).digest()
            s = size
            while s & 1:
                node = sha(_NODE + nodes.pop() + node).digest()
                s >>= 1
            nodes.append(node)
            size += 1
        self.size = size

    def extend_leaf_hashes(self, leaves: Sequence[bytes]) -> None:
        nodes, sha = self.nodes, hashlib.sha256
        size = self.size
        for node in leaves:
            s = size
            while s & 1:
                node = sha(_NODE + nodes.pop() + node).digest()
                s >>= 1
            nodes.append(node)
            size += 1
        self.size = size

    def extend_and_root(self, leaves: Sequence[bytes]) -> bytes:
        """:meth:`extend_with_range` without the block roots."""
        return self.extend_with_range(leaves)[0]

    def extend_with_range(self, leaves: Sequence[bytes], block_height: int = 0) -> tuple[bytes, list[bytes]]:
        """:meth:`extend_with_levels`, returning the range's root and its level ``block_height``."""
        root, levels = self.extend_with_levels(leaves, block_height)
        return root, levels[min(block_height, len(levels) - 1)] if levels else []

    def extend_with_levels(
        self, leaves: Sequence[bytes], block_height: int = 0, known: Sequence[Sequence[bytes]] = ()
    ) -> tuple[bytes, list[list[bytes]]]:
        """Append ``leaves`` (already hashed with :func:`leaf_hash`) and return the root of those leaves
        alone (:func:`root_of_leaf_hashes`, a checkpoint's range root), hashing the levels both trees share
        once: while the range starts at a multiple of ``2**h``, its level-``h`` nodes are perfect subtrees of
        the whole tree too. Above that height each tree is finished on its own, over ``n / 2**h`` nodes.
        A range of 10,000 leaves starting at a multiple of 10,000 (16 = 2**4 divides it) costs about 1.06
        node hashes a leaf instead of 2 (the range's tree, then the frontier's).

        Also returns the range tree's level ``block_height`` (:func:`block_roots`), which a checkpoint
        stores for receipts, and the levels below it: ``levels[h]`` the range tree's nodes at height ``h``
        (for :func:`frontier_consistency_proof_of_leaves`, which needs subtrees of the range).

        ``known``: levels of the range already hashed (:class:`RangeLevels`: ``known[h]`` the whole nodes of
        height ``h`` from the range's first leaf on, possibly over more leaves than ``leaves``); only the
        nodes after them are hashed here."""
        n = len(leaves)
        if not n:
            return EMPTY_ROOT, []
        start = self.size
        align = (start & -start).bit_length() - 1 if start else n.bit_length()
        levels = [list(leaves)]
        while len(levels[-1]) > 1 and len(levels) - 1 < max(align, block_height):
            h, below = len(levels), levels[-1]
            done = list(known[h][: n >> h]) if h < len(known) else []  # whole nodes over these leaves
            levels.append(done + _parent_level(below[2 * len(done) :]))
        height = min(align, len(levels) - 1)
        full = n >> height  # level-`height` nodes over whole blocks (a last, shorter one is carried up)
        for node in levels[height][:full]:
            self._push(node, height)
        offset = full << height
        for j in reversed(range(height)):  # the leaves left: whole aligned blocks of decreasing size
            if (n - offset) >> j & 1:
                self._push(levels[j][offset >> j], j)
                offset += 1 << j
        top = levels[-1]
        while len(top) > 1:
            top = _parent_level(top)
        return top[0], levels

    def _push(self, node: bytes, height: int) -> None:
        """Append a perfect subtree of ``2**height`` leaves (root ``node``) at a size that is a multiple of
        its width: merged like one leaf at that height."""
        nodes, sha = self.nodes, hashlib.sha256
        s = self.size >> height
        while s & 1:
            node = sha(_NODE + nodes.pop() + node).digest()
            s >>= 1
        nodes.append(node)
        self.size += 1 << height

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        root = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            root = hashlib.sha256(_NODE + node + root).digest()
        return root

    def ranges(self) -> list[tuple[int, int]]:
        """The leaf range [lo, hi) each node covers."""
        out, lo = [], 0
        for bit in reversed(range(self.size.bit_length())):
            if self.size >> bit & 1:
                out.append((lo, lo + (1 << bit)))
                lo += 1 << bit
        return out

    def to_bytes(self) -> bytes:
        return b"".join(self.nodes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) % 32:
            raise ValueError("a frontier is a whole number of 32-byte hashes")
        return cls(size, [data[i : i + 32] for i in range(0, len(data), 32)])


class RangeLevels:
    """The lower levels of the Merkle tree over a growing range of leaf hashes, hashed as the leaves
    arrive: ``levels[h]`` holds the whole nodes of height ``h`` (the roots of ``2**h`` consecutive leaves,
    counted from the range's first leaf), up to ``height``; ``levels[0]`` the leaves. What
    :meth:`Frontier.extend_with_levels` takes as ``known``: the writer hashes a checkpoint's lower levels
    while the rows stream to PostgreSQL, not at the checkpoint while PostgreSQL waits."""

    __slots__ = ("height", "levels")

    def __init__(self, height: int, leaves: Sequence[bytes] = ()) -> None:
        self.height = height
        self.levels: list[list[bytes]] = [[] for _ in range(height + 1)]
        self.extend(leaves)

    @property
    def leaves(self) -> list[bytes]:
        return self.levels[0]

    def __len__(self) -> int:
        return len(self.levels[0])

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append leaves and hash the nodes they complete, a level at a time (one :func:`_parent_level` per
        level: for a few hundred leaves at a time, about half the time of one call per leaf)."""
        levels = self.levels
        below = levels[0]
        below.extend(leaves)
        size = len(below)
        for h in range(1, self.height + 1):
            level = levels[h]
            have, whole = len(level), size >> h
            if whole == have:
                break
            level.extend(_parent_level(below[2 * have : 2 * whole]))
            below = level

    def truncate(self, size: int) -> None:
        """Forget the leaves from ``size`` on (and the nodes over them): rows that were not committed."""
        for h, level in enumerate(self.levels):
            del level[size >> h :]

    def drop(self, count: int) -> None:
        """Forget the first ``count`` leaves (a checkpoint sealed them): the range starts after them. The
        nodes are kept when ``count`` is a multiple of their width, hashed again otherwise."""
        if count % (1 << self.height) == 0:
            for h, level in enumerate(self.levels):
                del level[: count >> h]
        else:
            rest = self.levels[0][count:]
            self.levels = [[] for _ in self.levels]
            self.extend(rest)


def consistency_proof(old_size: int, new_size: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.2 PROOF(m, D[n]): the subtree hashes that show the tree of ``old_size`` leaves
    is a prefix of the tree of ``new_size`` leaves. ``mth(lo, hi)`` gives the root of leaves [lo, hi); the
    proof only asks for perfect subtrees of the old tree (its frontier) and subtrees of the new leaves."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves")
    if old_size in (0, new_size):
        return []
    return _subproof(old_size, 0, new_size, True, mth)


def _subproof(m: int, lo: int, hi: int, complete: bool, mth: Callable[[int, int], bytes]) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if complete else [mth(lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, lo, lo + k, complete, mth), mth(lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, False, mth), mth(lo, lo + k)]


def frontier_consistency_proof(old: Frontier, new_rows: Sequence[bytes]) -> list[bytes]:
    """The consistency proof from ``old`` to ``old`` plus ``new_rows`` (row hashes), from the old frontier
    and the new rows alone (what the writer holds at a checkpoint)."""
    return frontier_consistency_proof_of_leaves(old, leaf_hashes(new_rows))


def frontier_consistency_proof_of_leaves(
    old: Frontier, new_leaves: Sequence[bytes], levels: Sequence[Sequence[bytes]] = ()
) -> list[bytes]:
    """:func:`frontier_consistency_proof` for new leaves already hashed with :func:`leaf_hash` (the writer
    hashes a checkpoint's leaves once for its range root, its tree and this proof).

    ``levels``: the new leaves' tree levels as :meth:`Frontier.extend_with_levels` computed them
    (``levels[0]`` the leaves); the proof's subtrees of the new leaves are then put together from the
    nodes already hashed there instead of hashing their leaves again (up to one node hash a new leaf: 4 %
    of the sink's samples in a profile of the audit bench)."""
    m = old.size
    nodes = dict(zip(old.ranges(), old.nodes, strict=True))
    count = len(new_leaves)

    def stored(a: int, b: int) -> bytes | None:
        """The node over new leaves [a, b) from ``levels`` when it is one (a whole, aligned subtree)."""
        width = b - a
        if width & (width - 1) or a % width:
            return None
        h = width.bit_length() - 1
        if h >= len(levels) or b > count:
            return None
        return levels[h][a >> h]

    def range_root(a: int, b: int) -> bytes:  # RFC 6962 MTH over new leaves [a, b)
        node = stored(a, b)
        if node is not None:
            return node
        if not levels:
            return root_of_leaf_hashes(new_leaves[a:b])
        k = _split(b - a)
        return node_hash(range_root(a, a + k), range_root(a + k, b))

    def mth(lo: int, hi: int) -> bytes:
        if (lo, hi) in nodes:
            return nodes[(lo, hi)]
        if lo < m:
            raise ValueError(f"subtree [{lo}, {hi}) is neither in the old frontier nor after it")
        return range_root(lo - m, hi - m)

    return consistency_proof(m, m + count, mth)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: whether ``proof`` shows the tree (old_size, old_root) is a prefix of the
    tree (new_size, new_root)."""
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if old_size > new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def leaf_hashes(row_hashes: Sequence[bytes]) -> list[bytes]:
    sha = hashlib.sha256
    return [sha(_LEAF + x).digest() for x in row_hashes]


# The compiled _parent_level (:mod:`tollgate_audit_log.compiled`); None: the Python one (the tests run both).
parent_level: Callable[[list[bytes]], list[bytes]] | None = compiled.function("parent_level")


def _parent_level(nodes: Sequence[bytes]) -> list[bytes]:
    """One level up: each pair hashed, an odd last node carried up unchanged (see :func:`merkle_root`)."""
    if parent_level is not None:
        return parent_level(nodes if isinstance(nodes, list) else list(nodes))
    sha = hashlib.sha256
    up = [sha(_NODE + nodes[i] + nodes[i + 1]).digest() for i in range(0, len(nodes) - 1, 2)]
    if len(nodes) % 2:
        up.append(nodes[-1])
    return up


def root_of_leaf_hashes(level: Sequence[bytes]) -> bytes:
    """:func:`merkle_root` for leaves already hashed with :func:`leaf_hash`."""
    if not level:
        return EMPTY_ROOT
    nodes = list(level)
    while len(nodes) > 1:
        nodes = _parent_level(nodes)
    return nodes[0]
