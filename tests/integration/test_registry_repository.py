"""The registry's use cases over the PostgreSQL repository: the same tests as over the in-memory twin
(``tests/unit/registry/test_core.py``), so the two implementations of ``tollgate_registry.ports`` cannot drift
apart. Each test gets a database of its own; the lifecycle events are read back from the registry's outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.unit.registry.test_core import (  # noqa: F401  (collected here: the same tests, this backend)
    MakeWorld,
    World,
    test_a_worse_candidate_is_rejected_naming_the_failing_gate,
    test_approval_records_who_and_why_and_only_one_of_two_racing_approvals_wins,
    test_first_candidate_is_registered_then_promoted_with_its_gates_on_the_events,
    test_manual_promotion_to_staging_then_production_in_canary_mode,
    test_not_offered_and_unknown_models_are_rejected_on_arrival,
    test_redelivery_and_a_second_event_for_the_same_version_change_nothing,
    test_rejected_versions_do_not_count_for_slow_degradation_but_accepted_ones_do,
    test_rollback_restores_the_previous_production_version_with_the_reason,
    test_second_candidate_canaries_then_is_promoted_when_the_period_ends,
    test_shadow_rollout_is_announced_as_shadow_without_a_weight,
    test_tampered_missing_or_mis_sized_artifacts_are_refused_and_stored_as_rejected,
    test_unknown_models_and_versions_and_refused_actions_leave_everything_unchanged,
)
from tollgate_core.db import create_pool
from tollgate_core.lifecycle import LifecycleEvent
from tollgate_core.models import ModelSpec
from tollgate_core.outbox import Outbox
from tollgate_registry.app import MIGRATIONS
from tollgate_registry.postgres import OUTBOX_TABLE, PostgresRepository

LIFECYCLE_TOPIC = "test.models.lifecycle.v1"


@pytest.fixture
async def make_world(own_database: str) -> AsyncIterator[MakeWorld]:
    pools: list[asyncpg.Pool] = []

    async def make(*specs: ModelSpec) -> World:
        pool = await create_pool(own_database, "registry", MIGRATIONS)
        pools.append(pool)
        repo = PostgresRepository(pool, Outbox(pool, OUTBOX_TABLE), LIFECYCLE_TOPIC)

        async def published() -> list[LifecycleEvent]:
            rows = await pool.fetch(f"SELECT topic, value FROM {OUTBOX_TABLE} ORDER BY seq")
            assert {r["topic"] for r in rows} <= {LIFECYCLE_TOPIC}
            return [LifecycleEvent.model_validate_json(r["value"]) for r in rows]

        return World(repo, published, *specs)

    yield make
    for pool in pools:
        await pool.close()
