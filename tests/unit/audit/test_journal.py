"""The writer's journal of unsealed heads in the witness directory (``<stream>.unsealed``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollgate_audit_log.publish import WitnessDir


def h(n: int) -> bytes:
    return bytes([n]) * 32


def test_heads_are_appended_and_sealing_keeps_only_the_later_ones(tmp_path: Path) -> None:
    witness = WitnessDir(tmp_path)
    assert witness.unsealed_heads("inference") is None  # no journal: nothing to compare with
    for seq in (20, 40, 60):
        witness.intend("inference", seq, h(seq))
    assert witness.unsealed_heads("inference") == [(20, h(20)), (40, h(40)), (60, h(60))]
    witness.sealed("inference", 40, h(40))
    # the sealed head stays known (the journal's link to the database's last checkpoint), 20 is gone
    assert witness.unsealed_heads("inference") == [(40, h(40)), (60, h(60))]
    witness.intend("inference", 80, h(80))
    assert witness.unsealed_heads("inference") == [(40, h(40)), (60, h(60)), (80, h(80))]
    assert witness.unsealed_heads("other") is None


def test_a_line_that_is_not_a_head_is_an_error(tmp_path: Path) -> None:
    witness = WitnessDir(tmp_path)
    witness.intend("inference", 1, h(1))
    with witness.unsealed_file("inference").open("a") as fh:
        fh.write("seven deadbeef\n")
    with pytest.raises(ValueError, match=r"inference\.unsealed:2"):
        witness.unsealed_heads("inference")
