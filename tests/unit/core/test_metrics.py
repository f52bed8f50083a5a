"""The metric catalog: one list that the trainer computes, gates may name and the registry orders."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tollgate_core.contracts import ContractRegistry
from tollgate_core.metrics import METRICS, Direction, direction, imbalance_warning, metrics_for
from tollgate_core.models import Gates, ModelSpec, check_model, model_catalog
from tollgate_trainer.evaluate import classification_metrics, regression_metrics

CONTRACTS = ContractRegistry.from_directory()


def test_the_trainer_computes_exactly_the_catalog_metrics() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    proba = rng.dirichlet([1, 1], 300)
    assert set(classification_metrics(y, proba, 1)) - {"count"} == metrics_for("classification")
    y3 = rng.integers(0, 3, 300)
    proba3 = rng.dirichlet([1, 1, 1], 300)
    assert set(classification_metrics(y3, proba3, None)) - {"count"} == metrics_for("classification")
    truth = rng.normal(size=300)
    assert set(regression_metrics(truth, truth + rng.normal(size=300))) - {"count"} == metrics_for(
        "regression"
    )


def test_every_metric_has_a_direction() -> None:
    assert direction("average_precision") is Direction.HIGHER_IS_BETTER
    assert direction("brier") is Direction.LOWER_IS_BETTER
    assert {m.task for m in METRICS.values()} == {"classification", "regression"}


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        (
            {"metrics": {"pr_auc": {"min": 0.3}}},
            "'pr_auc' is not computed by the trainer; did you mean 'average_precision'",
        ),
        ({"degradation_tolerance": {"roc_acu": 0.1}}, "did you mean 'roc_auc'"),
        ({"fairness_metric": "auroc", "fairness_max_gap": 0.1}, "'auroc' is not computed"),
    ],
)
def test_a_gate_on_a_metric_the_trainer_never_computes_is_refused_at_load(
    gates: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Gates.model_validate(gates)


def _spec(**gates: object) -> ModelSpec:
    return ModelSpec.model_validate({"model": "m-1", "contract": "credit-default.v1", "gates": gates})


def test_a_metric_of_the_other_task_is_refused_against_the_contract() -> None:
    contract = CONTRACTS.get("credit-default.v1")
    assert contract is not None
    with pytest.raises(
        ValueError,
        match="'rmse' is not computed by the trainer for classification \\(it is a regression metric\\)",
    ):
        check_model(_spec(metrics={"rmse": {"max": 1}}), contract)


def test_an_accuracy_only_gate_is_flagged_for_imbalanced_labels() -> None:
    contract = CONTRACTS.get("credit-default.v1")
    assert contract is not None
    warnings = check_model(_spec(metrics={"accuracy": {"min": 0.9}}), contract)
    assert len(warnings) == 1 and "unsuitable for imbalanced labels" in warnings[0]
    assert (
        check_model(_spec(metrics={"accuracy": {"min": 0.9}, "average_precision": {"min": 0.3}}), contract)
        == []
    )
    assert imbalance_warning(["rmse"], "regression") is None


def test_the_shipped_catalog_checks_clean_against_its_contracts() -> None:
    for spec in model_catalog().values():
        contract = CONTRACTS.get(spec.contract)
        assert contract is not None, spec.contract
        assert check_model(spec, contract) == []
