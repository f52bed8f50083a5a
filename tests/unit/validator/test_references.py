"""The training reference of a model candidate becomes its contract's expectations and is kept, so a
restart (a fresh :class:`References` loaded from the store) judges with the same expectations."""

from __future__ import annotations

from pathlib import Path

import orjson

from tollgate_validator.stage import References
from tollgate_validator.storage import InMemoryReferenceStore, keep_candidate_reference, load_references

EXAMPLE = (
    Path(__file__).resolve().parents[3]
    / "schemas/topics/models.candidates/v1.examples/credit-default-first-version.json"
)


async def test_a_candidate_reference_is_kept_and_back_in_force_after_a_restart() -> None:
    event = orjson.loads(EXAMPLE.read_bytes())
    contract = event["payload"]["reference"]["contract"]
    references, store = References(), InMemoryReferenceStore()
    await keep_candidate_reference(event, references, store)
    assert list(references.by_contract) == [contract]
    kept = store.by_contract[contract]
    assert (kept.model, kept.version, kept.source_event) == (
        event["payload"]["model"],
        str(event["payload"]["version"]),
        event["event_id"],
    )
    restarted = References()
    await load_references(restarted, store)
    assert list(restarted.by_contract) == [contract]
    assert restarted.by_contract[contract].reference == kept.reference
