"""The digest approvals approve (``evaluation_digest``) stays what it was for a report stored before the
report gained its global feature importance; a report with one has a digest of its own."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tollgate_core.lifecycle import EvaluationReport, evaluation_digest

# A report as the registry stored it before feature_importance existed: every field the model then had,
# dumped in JSON mode (what model_dump(mode="json") wrote).
STORED: dict[str, Any] = {
    "evaluated_by": "platform",
    "holdout_rows": 500,
    "holdout_fraction": 0.2,
    "ordered_by": "occurred_at",
    "data_hash": "5" * 64,
    "metrics": {"roc_auc": 0.91, "log_loss": 0.21, "count": 500.0},
    "segment_metrics": {"No": {"roc_auc": 0.9}, "Yes": {"roc_auc": 0.88}},
    "fairness_gap": {"roc_auc": 0.02},
    "calibration": [{"low": 0.0, "high": 0.1, "count": 400, "mean_score": 0.03, "observed_rate": 0.025}],
    "parity": None,
    "baselines": {"majority": {"roc_auc": 0.5}},
}
IMPORTANCE = {
    "method": "permutation",
    "metric": "log_loss",
    "baseline": 0.21,
    "rows": 500,
    "repeats": 5,
    "seed": 0,
    "features": [{"feature": "balance", "importance": 0.3, "spread": 0.01}],
}


def digest_before(document: dict[str, Any]) -> str:
    """The digest as it was computed before the field existed."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_a_report_stored_without_importance_keeps_its_digest() -> None:
    stored = EvaluationReport.model_validate(STORED)
    assert stored.feature_importance is None
    assert evaluation_digest(stored) == digest_before(STORED)
    # read back after the registry stored it again with the new field as null: still the same digest
    again = EvaluationReport.model_validate({**stored.model_dump(mode="json")})
    assert evaluation_digest(again) == digest_before(STORED)


def test_a_report_with_importance_has_a_digest_of_its_own() -> None:
    measured = EvaluationReport.model_validate({**STORED, "feature_importance": IMPORTANCE})
    assert evaluation_digest(measured) != digest_before(STORED)
    assert evaluation_digest(measured) == digest_before({**STORED, "feature_importance": IMPORTANCE})
    changed = {**IMPORTANCE, "features": [{"feature": "balance", "importance": 0.31, "spread": 0.01}]}
    other = EvaluationReport.model_validate({**STORED, "feature_importance": changed})
    assert evaluation_digest(other) != evaluation_digest(measured)
