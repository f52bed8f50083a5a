from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as reference_murmur2

from tollgate_core.kafka import _murmur2


def test_key_hash_matches_kafkas_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"C000123"] + [
        rng.randbytes(rng.randrange(0, 40)) for _ in range(2000)
    ]
    for key in keys:
        assert _murmur2(key) == reference_murmur2(key) & 0xFFFFFFFF, key
