"""The Merkle root is RFC 6962's, and inclusion proofs check out (and fail when anything changes)."""

from __future__ import annotations

import hashlib

import pytest

from tollgate_audit_log.merkle import EMPTY_ROOT, inclusion_proof, leaf_hash, merkle_root, verify_inclusion


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
