"""Hysteresis: alerts need N bad windows in a row to raise and M good ones to clear; noise never pages."""

from __future__ import annotations

from tollgate_core.alerts import AlertKind, AlertState
from tollgate_monitor.alerts import Hysteresis, wants_retraining


def feed(verdicts: list[bool | None], raise_after: int = 3, clear_after: int = 3) -> list[tuple[int, str]]:
    state = Hysteresis()
    out = []
    for i, v in enumerate(verdicts):
        change = state.observe(
            v,
            raise_after=raise_after,
            clear_after=clear_after,
            kind=AlertKind.DATA_DRIFT,
            model="m",
            version="1",
            window_end=float(i),
        )
        if change is not None:
            out.append((i, change.state.value))
    return out


def test_raises_after_n_consecutive_and_clears_after_m() -> None:
    assert feed([False, True, True, True, True, False, False, False]) == [(3, "raised"), (7, "cleared")]


def test_flapping_never_raises_and_unknown_windows_change_nothing() -> None:
    assert feed([True, False] * 20) == []
    assert feed([True, True, False, True, True, False]) == []
    # Too-small windows (None) neither break nor extend a streak.
    assert feed([True, None, True, None, None, True]) == [(5, "raised")]
    assert feed([True, True, True, False, None, False, None, True, False, False, False], clear_after=2) == [
        (2, "raised"),
        (5, "cleared"),
    ]


def test_alert_ids_are_stable_under_replay_and_shared_by_raise_and_clear() -> None:
    def changes() -> list[str]:
        state = Hysteresis()
        ids = []
        for i, v in enumerate([True, True, True, False, False, False]):
            c = state.observe(
                v,
                raise_after=3,
                clear_after=3,
                kind=AlertKind.LATENCY,
                model="m",
                version="2",
                window_end=float(i),
            )
            if c:
                ids.append(c.alert_id)
        return ids

    first, second = changes(), changes()
    assert first == second and len(first) == 2 and first[0] == first[1]


def test_state_round_trips_through_json() -> None:
    state = Hysteresis()
    state.observe(
        True, raise_after=2, clear_after=2, kind=AlertKind.PERFORMANCE, model="m", version="1", window_end=1.0
    )
    assert Hysteresis.from_json(state.to_json()) == state


def test_only_drift_and_performance_on_production_ask_for_retraining() -> None:
    assert wants_retraining(AlertKind.DATA_DRIFT, AlertState.RAISED, "production")
    assert wants_retraining(AlertKind.PERFORMANCE, AlertState.RAISED, "production")
    assert not wants_retraining(AlertKind.DATA_DRIFT, AlertState.RAISED, "staging")
    assert not wants_retraining(AlertKind.LATENCY, AlertState.RAISED, "production")
    assert not wants_retraining(AlertKind.DATA_DRIFT, AlertState.CLEARED, "production")
