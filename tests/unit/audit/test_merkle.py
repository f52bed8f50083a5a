"""The Merkle root is RFC 6962's, and inclusion proofs check out (and fail when anything changes)."""

from __future__ import annotations

import hashlib

import pytest

from tests.audit_support import compiled_or_python
from tollgate_audit_log import merkle
from tollgate_audit_log.merkle import EMPTY_ROOT, inclusion_proof, leaf_hash, merkle_root, verify_inclusion


@pytest.fixture(autouse=True, params=["compiled", "python"])
def tree_levels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: levels hashed by the compiled parent_level and by the Python loop."""
    return compiled_or_python(request, monkeypatch, merkle, "parent_level")


def rfc6962(leaves: list[bytes]) -> bytes:
    """The specification's recursive definition, as the reference."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962(leaves[:k]) + rfc6962(leaves[k:])).digest()


def rfc6962_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """The specification's recursive audit path (RFC 6962 2.1.1), as the reference."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return [*rfc6962_path(index, leaves[:k]), rfc6962(leaves[k:])]
    return [*rfc6962_path(index - k, leaves[k:]), rfc6962(leaves[:k])]


LEAVES = [hashlib.sha256(str(i).encode()).digest() for i in range(40)]


def test_inclusion_proofs_are_the_recursive_definitions_paths() -> None:
    many = [hashlib.sha256(str(i).encode()).digest() for i in range(300)]
    for n in [*range(1, 70), 127, 128, 129, 255, 256, 257, 300]:
        for i in range(n):
            assert inclusion_proof(many[:n], i) == rfc6962_path(i, many[:n]), (n, i)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 40])
def test_root_matches_the_recursive_definition(n: int) -> None:
    assert merkle_root(LEAVES[:n]) == rfc6962(LEAVES[:n])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 40])
def test_every_leaf_has_a_valid_inclusion_proof(n: int) -> None:
    root = merkle_root(LEAVES[:n])
    for i in range(n):
        proof = inclusion_proof(LEAVES[:n], i)
        assert verify_inclusion(LEAVES[i], i, n, proof, root)
        assert not verify_inclusion(bytes(32), i, n, proof, root)
        if proof:
            assert not verify_inclusion(LEAVES[i], i, n, [bytes(32), *proof[1:]], root)


def test_leaves_and_nodes_cannot_be_confused() -> None:
    a, b = LEAVES[0], LEAVES[1]
    inner = hashlib.sha256(b"\x01" + leaf_hash(a) + leaf_hash(b)).digest()
    assert merkle_root([a, b]) == inner
    assert merkle_root([inner]) != inner


def test_frontier_gives_the_rfc6962_root_of_every_prefix() -> None:
    import hashlib

    from tollgate_audit_log.merkle import Frontier, leaf_hashes, merkle_root, root_of_leaf_hashes

    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(300)]
    frontier = Frontier()
    for n, leaf in enumerate(leaves, 1):
        frontier.append(leaf)
        assert frontier.size == n and len(frontier.nodes) == n.bit_count()
        if n in (1, 2, 3, 7, 8, 9, 100, 255, 256, 257, 300):
            assert frontier.root() == merkle_root(leaves[:n]) == root_of_leaf_hashes(leaf_hashes(leaves[:n]))
    again = Frontier.from_bytes(frontier.size, frontier.to_bytes())
    assert again.root() == frontier.root()


def test_consistency_proofs_between_every_pair_of_sizes() -> None:
    import hashlib

    from tollgate_audit_log.merkle import (
        Frontier,
        consistency_proof,
        frontier_consistency_proof,
        merkle_root,
        verify_consistency,
    )

    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(70)]
    for n in range(1, 71):
        new_root = merkle_root(leaves[:n])
        for m in range(0, n + 1):
            old_root = merkle_root(leaves[:m])
            proof = consistency_proof(m, n, lambda lo, hi: merkle_root(leaves[lo:hi]))
            old = Frontier()
            old.extend(leaves[:m])
            assert frontier_consistency_proof(old, leaves[m:n]) == proof  # what the writer can compute
            assert verify_consistency(m, n, old_root, new_root, proof), (m, n)
            if 0 < m < n:
                assert not verify_consistency(m, n, new_root, new_root, proof)  # a wrong old root
                if proof:
                    forged = [bytes(32), *proof[1:]]
                    assert not verify_consistency(m, n, old_root, new_root, forged)
                # history rewritten at one leaf before m: the old root no longer follows
                changed = [*leaves[:n]]
                changed[0] = bytes(32)
                assert not verify_consistency(m, n, old_root, merkle_root(changed), proof)


@pytest.mark.parametrize("block_height", [0, 3, 6])
def test_consistency_proof_from_the_checkpoint_levels_is_the_proof_from_the_leaves(block_height: int) -> None:
    """The writer builds a checkpoint's consistency proof from the range tree's levels it has just hashed
    (extend_with_levels); the proof is the one hashed from the new leaves alone, for old sizes aligned or
    not and ranges of any length (a carried-up last node of a level is never taken as a whole subtree)."""
    from tollgate_audit_log.merkle import (
        Frontier,
        consistency_proof,
        frontier_consistency_proof_of_leaves,
        leaf_hashes,
        verify_consistency,
    )

    rows = [hashlib.sha256(str(i).encode()).digest() for i in range(1200)]
    leaves = leaf_hashes(rows)
    for m in [1, 2, 3, 5, 16, 17, 48, 64, 100, 255, 256, 300, 512, 640]:
        old = Frontier()
        old.extend(rows[:m])
        for length in [1, 2, 3, 7, 16, 63, 64, 65, 100, 129, 300, 511, 512, 560]:
            new_leaves = leaves[m : m + length]
            tree = old.copy()
            root, levels = tree.extend_with_levels(new_leaves, block_height)
            assert levels[0] == new_leaves and root == merkle_root(rows[m : m + length])
            proof = frontier_consistency_proof_of_leaves(old, new_leaves, levels)
            assert proof == frontier_consistency_proof_of_leaves(old, new_leaves), (m, length)
            assert proof == consistency_proof(m, m + length, lambda lo, hi: merkle_root(rows[lo:hi]))
            assert verify_consistency(m, m + length, old.root(), tree.root(), proof), (m, length)


def test_range_levels_kept_as_leaves_arrive_give_the_same_tree_head() -> None:
    """RangeLevels hashes a range's lower levels leaf by leaf (as the writer streams rows); given to
    extend_with_levels as known levels, over all or part of its leaves, after truncating uncommitted leaves
    and after dropping sealed ones (aligned on a block or not), the range root, block roots, levels, tree
    and consistency proof are the ones hashed from the leaves alone."""
    from tollgate_audit_log.merkle import (
        BLOCK_HEIGHT,
        Frontier,
        RangeLevels,
        frontier_consistency_proof_of_leaves,
        leaf_hashes,
        root_of_leaf_hashes,
    )

    leaves = leaf_hashes([hashlib.sha256(str(i).encode()).digest() for i in range(1500)])

    def same(start: int, known: RangeLevels, n: int) -> None:
        old = Frontier()
        old.extend_leaf_hashes([bytes(32)] * start)
        part = known.leaves[:n]
        a, b = old.copy(), old.copy()
        with_known = a.extend_with_levels(part, BLOCK_HEIGHT, known.levels)
        alone = b.extend_with_levels(part, BLOCK_HEIGHT)
        assert with_known == alone and (a.size, a.nodes) == (b.size, b.nodes), (start, n)
        assert frontier_consistency_proof_of_leaves(
            old, part, with_known[1]
        ) == frontier_consistency_proof_of_leaves(old, part), (start, n)

    for start in [0, 1, 64, 100, 128, 640]:
        for total in [1, 2, 63, 64, 65, 127, 128, 129, 300, 1000]:
            known = RangeLevels(BLOCK_HEIGHT, leaves[:total])
            for n in {1, 2, 3, 63, 64, 65, total // 2, total}:
                if n <= total:
                    same(start, known, n)
    grown = RangeLevels(BLOCK_HEIGHT, leaves[:300])
    grown.truncate(200)  # a batch rolled back
    assert grown.levels == RangeLevels(BLOCK_HEIGHT, leaves[:200]).levels
    for sealed in (128, 37):  # a checkpoint sealed the first rows: aligned on a block, or not
        rest = RangeLevels(BLOCK_HEIGHT, leaves[:400])
        rest.drop(sealed)
        assert rest.levels == RangeLevels(BLOCK_HEIGHT, leaves[sealed:400]).levels
        for first in range(400, 450, 7):  # leaves arriving a few at a time
            rest.extend(leaves[first : min(first + 7, 450)])
        assert rest.levels == RangeLevels(BLOCK_HEIGHT, leaves[sealed:450]).levels
        same(100, rest, len(rest))
    one_by_one = RangeLevels(BLOCK_HEIGHT)
    for leaf in leaves[:300]:
        one_by_one.extend([leaf])
    assert one_by_one.levels == RangeLevels(BLOCK_HEIGHT, leaves[:300]).levels
    assert one_by_one.levels[BLOCK_HEIGHT] == [
        root_of_leaf_hashes(leaves[i : i + 64]) for i in range(0, 256, 64)
    ]


def test_frontier_extended_in_blocks_equals_leaf_by_leaf() -> None:
    """extend/extend_leaf_hashes append aligned perfect subtrees at once: the same nodes as one leaf at a
    time, from any starting size and for any block length."""
    from tollgate_audit_log.merkle import Frontier

    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(600)]
    one_by_one = [Frontier()]
    for leaf in leaves:
        f = one_by_one[-1].copy()
        f.append(leaf)
        one_by_one.append(f)
    for start in [0, 1, 2, 3, 5, 8, 63, 64, 65, 127, 200]:
        for length in [0, 1, 2, 3, 7, 16, 33, 100, 255, 256, 257, 399]:
            f = one_by_one[start].copy()
            f.extend(leaves[start : start + length])
            assert (f.size, f.nodes) == (start + length, one_by_one[start + length].nodes), (start, length)


def test_extend_and_root_shares_levels_and_equals_the_separate_computations() -> None:
    """A checkpoint's range root and the whole tree's frontier from one pass: the same range root as
    root_of_leaf_hashes and the same frontier as appending leaf by leaf, from any start and length."""
    from tollgate_audit_log.merkle import Frontier, leaf_hashes, root_of_leaf_hashes

    leaves = leaf_hashes([hashlib.sha256(str(i).encode()).digest() for i in range(700)])
    one_by_one = [Frontier()]
    for leaf in leaves:
        f = one_by_one[-1].copy()
        f.append_leaf_hash(leaf)
        one_by_one.append(f)
    for start in [0, 1, 2, 3, 5, 8, 16, 48, 63, 64, 65, 127, 200, 256]:
        for length in [0, 1, 2, 3, 4, 7, 16, 33, 100, 255, 256, 257, 399, 444]:
            f = one_by_one[start].copy()
            root = f.extend_and_root(leaves[start : start + length])
            assert root == root_of_leaf_hashes(leaves[start : start + length]), (start, length)
            assert (f.size, f.nodes) == (start + length, one_by_one[start + length].nodes), (start, length)


@pytest.mark.parametrize("height", [0, 1, 2, 3, 6])
def test_a_path_from_the_block_roots_is_the_path_over_the_whole_range(height: int) -> None:
    """A receipt's audit path from its row's block and the checkpoint's stored block roots equals the path
    over every row of the range (the RFC 6962 path), for ranges of any length; block_roots is the level
    extend_with_range returns."""
    from tollgate_audit_log.merkle import (
        Frontier,
        block_roots,
        inclusion_proof_from_blocks,
        leaf_hashes,
    )

    many = [hashlib.sha256(str(i).encode()).digest() for i in range(300)]
    width = 1 << height
    for n in [1, 2, 3, 5, 8, 9, 63, 64, 65, 100, 128, 129, 300]:
        rows = many[:n]
        roots = block_roots(leaf_hashes(rows), height)
        for start in (0, 16, 100):
            root, blocks = Frontier(start, [b"\x00" * 32] * start.bit_count()).extend_with_range(
                leaf_hashes(rows), height
            )
            assert blocks == roots and root == merkle_root(rows), (n, start)
        for i in range(n):
            first = (i >> height) << height
            block = rows[first : first + width]
            assert inclusion_proof_from_blocks(block, i, roots, height) == inclusion_proof(rows, i), (n, i)
