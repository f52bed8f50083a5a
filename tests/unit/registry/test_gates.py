"""Promotion gates as pure functions: thresholds, sudden drop, slow degradation, parity, fairness."""

from __future__ import annotations

import pytest

from tests.unit.registry.candidates import candidate, spec
from tollgate_core.models import Gates
from tollgate_registry.gates import (
    Baseline,
    Direction,
    GateConfigError,
    check_gates,
    direction,
    evaluate_gates,
    first_failure,
    rejection_reason,
)

GATES = spec().gates


def by_name(results: list) -> dict:  # type: ignore[type-arg]
    return {r.gate: r for r in results}


def test_a_good_first_candidate_passes_every_gate_in_order() -> None:
    results = evaluate_gates(candidate("1"), GATES, production=None, recent=[])
    assert [r.gate for r in results] == [
        "parity",
        "min:roc_auc",
        "max:log_loss",
        "regression:roc_auc",
        "degradation:roc_auc",
        "fairness:roc_auc",
    ]
    assert all(r.passed for r in results), results
    assert by_name(results)["regression:roc_auc"].detail == "no production version to compare with"
    assert first_failure(results) is None and rejection_reason(results) == ""


def test_sudden_drop_against_production_fails_the_regression_gate() -> None:
    results = evaluate_gates(candidate("2", roc_auc=0.83), GATES, Baseline("1", {"roc_auc": 0.86}), [])
    gate = by_name(results)["regression:roc_auc"]
    assert not gate.passed
    assert gate.observed == 0.83 and gate.threshold == pytest.approx(0.84)
    assert "production 1 0.8600" in gate.detail
    assert rejection_reason(results).startswith(
        "gate regression:roc_auc failed: roc_auc 0.8300 beyond limit 0.8400"
    )


def test_exactly_at_the_tolerance_passes_despite_float_noise() -> None:
    results = evaluate_gates(candidate("2", roc_auc=0.84), GATES, Baseline("1", {"roc_auc": 0.86}), [])
    assert by_name(results)["regression:roc_auc"].passed


def test_slow_degradation_is_caught_against_the_best_of_the_last_k() -> None:
    # Each step is within the 0.02 sudden-drop tolerance of production, but 0.05 below the best of the last 3.
    recent = [
        Baseline("4", {"roc_auc": 0.87}),
        Baseline("3", {"roc_auc": 0.885}),
        Baseline("2", {"roc_auc": 0.90}),
    ]
    results = evaluate_gates(candidate("5", roc_auc=0.855), GATES, Baseline("4", {"roc_auc": 0.87}), recent)
    named = by_name(results)
    assert named["regression:roc_auc"].passed
    assert not named["degradation:roc_auc"].passed
    assert "best of last 3: 2 0.9000" in named["degradation:roc_auc"].detail
    assert first_failure(results).gate == "degradation:roc_auc"  # type: ignore[union-attr]


def test_only_the_last_k_versions_count_for_degradation() -> None:
    recent = [Baseline(str(v), {"roc_auc": 0.85}) for v in (9, 8, 7)] + [Baseline("1", {"roc_auc": 0.99})]
    results = evaluate_gates(candidate("10", roc_auc=0.85), GATES, None, recent)
    assert by_name(results)["degradation:roc_auc"].passed


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    gates = Gates(
        regression_tolerance={"log_loss": 0.01},
        degradation_tolerance={"log_loss": 0.02},
        require_parity=False,
    )
    worse = evaluate_gates(
        candidate("2", log_loss=0.27),
        gates,
        Baseline("1", {"log_loss": 0.25}),
        [Baseline("1", {"log_loss": 0.25})],
    )
    assert [r.passed for r in worse] == [False, True]
    assert worse[0].threshold == pytest.approx(0.26)
    better = evaluate_gates(candidate("2", log_loss=0.20), gates, Baseline("1", {"log_loss": 0.25}), [])
    assert all(r.passed for r in better)
    assert (
        direction("log_loss") is Direction.LOWER_IS_BETTER and direction("rmse") is Direction.LOWER_IS_BETTER
    )
    assert direction("roc_auc") is Direction.HIGHER_IS_BETTER


def test_absolute_bounds_and_missing_metrics() -> None:
    results = by_name(evaluate_gates(candidate("1", roc_auc=0.79, log_loss=0.31), GATES, None, []))
    assert results["min:roc_auc"].detail == "roc_auc 0.7900 < min 0.8000"
    assert results["max:log_loss"].detail == "log_loss 0.3100 > max 0.3000"
    gates = Gates(metrics={"f1": {"min": 0.5}}, regression_tolerance={"f1": 0.1}, require_parity=False)  # type: ignore[dict-item]
    missing = evaluate_gates(candidate("1"), gates, Baseline("0", {"f1": 0.6}), [])
    assert [(r.gate, r.passed) for r in missing] == [("min:f1", False), ("regression:f1", False)]
    assert "not among the candidate's metrics" in missing[0].detail


def test_a_baseline_without_the_metric_cannot_fail_the_candidate() -> None:
    results = by_name(evaluate_gates(candidate("2"), GATES, Baseline("1", {"accuracy": 0.9}), []))
    assert results["regression:roc_auc"].passed
    assert results["regression:roc_auc"].detail == "production version 1 has no roc_auc"


def test_parity_and_fairness() -> None:
    not_offered = by_name(evaluate_gates(candidate("1", offered=False), GATES, None, []))
    assert not not_offered["parity"].passed and "exceeds" in not_offered["parity"].detail
    unfair = by_name(evaluate_gates(candidate("1", fairness_gap=0.2), GATES, None, []))
    assert not unfair["fairness:roc_auc"].passed
    assert unfair["fairness:roc_auc"].detail == "roc_auc gap across student 0.2000 > max 0.1500"
    unknown = by_name(evaluate_gates(candidate("1", fairness_gap=None), GATES, None, []))
    assert not unknown["fairness:roc_auc"].passed
    no_parity_needed = evaluate_gates(
        candidate("1"), GATES.model_copy(update={"require_parity": False}), None, []
    )
    assert "parity" not in by_name(no_parity_needed)


def test_several_failures_name_the_first_and_list_the_rest() -> None:
    results = evaluate_gates(
        candidate("2", roc_auc=0.70, fairness_gap=0.3), GATES, Baseline("1", {"roc_auc": 0.86}), []
    )
    reason = rejection_reason(results)
    assert reason.startswith("gate min:roc_auc failed: ")
    assert reason.endswith("(also failed: regression:roc_auc, fairness:roc_auc)")


def test_a_tolerance_on_a_metric_of_unknown_direction_is_a_configuration_error() -> None:
    check_gates("m", GATES)
    # The catalog refuses it when the entry is loaded ...
    with pytest.raises(
        ValueError, match="metric 'roc_acu' is not computed by the trainer; did you mean 'roc_auc'"
    ):
        Gates(regression_tolerance={"roc_acu": 0.02})
    # ... and the registry's own check still refuses an entry built without validation.
    with pytest.raises(GateConfigError, match="model m: metric 'roc_acu' is not computed by the trainer"):
        check_gates("m", Gates.model_construct(regression_tolerance={"roc_acu": 0.02}))
    with pytest.raises(GateConfigError, match="neither min nor max"):
        check_gates("m", Gates(metrics={"roc_auc": {}}))  # type: ignore[dict-item]


def test_the_shipped_catalog_is_evaluable() -> None:
    from tollgate_core.models import model_catalog

    for name, model_spec in model_catalog().items():
        check_gates(name, model_spec.gates)


SOPHISTICATED = Gates.model_validate(
    {"require_parity": False, "cost_of_sophistication": {"metric": "roc_auc", "margin": 0.02}}
)


def with_baselines(roc_auc: float, baselines: dict[str, dict[str, float]]):  # type: ignore[no-untyped-def]
    return candidate("1", roc_auc=roc_auc).model_copy(update={"baselines": baselines})


def test_a_model_that_beats_its_baselines_by_the_margin_passes() -> None:
    results = evaluate_gates(
        with_baselines(0.86, {"majority": {"roc_auc": 0.5}, "linear": {"roc_auc": 0.84}}),
        SOPHISTICATED,
        production=None,
        recent=[],
    )
    assert [(r.gate, r.passed) for r in results] == [
        ("cost of sophistication:linear", True),
        ("cost of sophistication:majority", True),
    ]
    assert by_name(results)["cost of sophistication:linear"].threshold == pytest.approx(0.86)


def test_a_model_no_better_than_a_linear_one_is_refused_naming_the_rule() -> None:
    results = evaluate_gates(
        with_baselines(0.85, {"majority": {"roc_auc": 0.5}, "linear": {"roc_auc": 0.84}}),
        SOPHISTICATED,
        production=None,
        recent=[],
    )
    assert rejection_reason(results) == (
        "gate cost of sophistication:linear failed: roc_auc 0.8500 does not beat the linear baseline's "
        "0.8400 by the margin 0.0200"
    )


def test_lower_is_better_metrics_must_be_lower_by_the_margin() -> None:
    gates = Gates.model_validate(
        {"require_parity": False, "cost_of_sophistication": {"metric": "log_loss", "margin": 0.05}}
    )
    ok = with_baselines(0.86, {"majority": {"log_loss": 0.69}})  # the candidate's log_loss is 0.25
    assert all(r.passed for r in evaluate_gates(ok, gates, production=None, recent=[]))
    close = with_baselines(0.86, {"majority": {"log_loss": 0.28}})
    [result] = evaluate_gates(close, gates, production=None, recent=[])
    assert not result.passed and result.threshold == pytest.approx(0.23)


def test_a_candidate_without_baselines_cannot_show_it_is_worth_its_complexity() -> None:
    [result] = evaluate_gates(candidate("1"), SOPHISTICATED, production=None, recent=[])
    assert (result.gate, result.passed) == ("cost of sophistication", False)
    assert result.detail == "the candidate reports no baselines to compare with"


def test_without_the_rule_baselines_change_nothing() -> None:
    gates = Gates.model_validate({"require_parity": False})
    assert evaluate_gates(with_baselines(0.5, {"linear": {"roc_auc": 0.9}}), gates, None, []) == []
