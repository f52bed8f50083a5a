"""Promotion gates: pure functions from a candidate, its model's gate spec and the model's history to one
:class:`GateResult` per gate. Nothing here touches a database or a broker.

Gates, in the order they are evaluated and reported (the first failing one names the rejection):

* ``parity`` — the ONNX export agreed with the trained pipeline (only when ``require_parity``); for a
  submitted model, with the skops pipeline submitted with it (not checked when none came: the ONNX itself
  is what the platform evaluated).
* ``min:<metric>`` / ``max:<metric>`` — absolute bounds on the holdout metrics.
* ``regression:<metric>`` — *sudden drop*: no worse than the current production version by more than
  ``regression_tolerance[metric]``.
* ``degradation:<metric>`` — *slow degradation*: no worse than the best of the last ``best_of_last`` versions
  that passed their own gates by more than ``degradation_tolerance[metric]``. A series of versions, each a
  little worse than the one before, passes the sudden-drop gate every time; this gate catches the series.
* ``fairness:<metric>`` — the gap of ``fairness_metric`` across segments (``reference.fairness_gap``) is at
  most ``fairness_max_gap``.
* ``cost of sophistication:<baseline>`` — the candidate beats each simple baseline trained on its rows
  (``majority`` or ``mean``; ``linear`` for a model that is not linear) by at least the configured margin on the
  configured holdout metric. A candidate that reports no baselines fails: it cannot show it is worth its
  complexity.

"Worse" depends on the metric: :data:`tollgate_core.metrics.METRICS` says which are better high (roc_auc, f1, ...)
and which better low (log_loss, rmse, brier, ece, ...). A tolerance on a metric without a known direction
is a configuration error, raised by :func:`check_gates` when the catalog is loaded, so a typo fails at start
instead of passing silently.

A metric the candidate does not report fails its gate (it cannot show it is good enough); a metric the
baseline does not have passes with a note (there is nothing to compare with). Comparisons allow
:data:`EPSILON` so that float noise (0.86 - 0.02 = 0.8399999...) does not decide a gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tollgate_core.lifecycle import CandidatePayload, GateResult
from tollgate_core.metrics import Direction, UnknownMetricError
from tollgate_core.metrics import direction as metric_direction
from tollgate_core.models import Gates

EPSILON = 1e-9


class GateConfigError(ValueError):
    """A model's gates cannot be evaluated as configured."""


def direction(metric: str) -> Direction:
    try:
        return metric_direction(metric)
    except UnknownMetricError as exc:
        raise GateConfigError(str(exc)) from None


def check_gates(model: str, gates: Gates) -> None:
    """Refuse a gate spec whose tolerances name metrics of unknown direction."""
    for metric in [*gates.regression_tolerance, *gates.degradation_tolerance]:
        try:
            direction(metric)
        except GateConfigError as exc:
            raise GateConfigError(f"model {model}: {exc}") from None
    for metric, bound in gates.metrics.items():
        if bound.min is None and bound.max is None:
            raise GateConfigError(f"model {model}: gate on {metric} has neither min nor max")


@dataclass(frozen=True)
class Baseline:
    """The metrics of an earlier version that a candidate is compared against."""

    version: str
    metrics: Mapping[str, float]


def _f(value: float) -> str:
    return f"{value:.4f}"


def _worse_limit(metric: str, reference: float, tolerance: float) -> float:
    """The worst value a candidate may have: reference - tolerance (higher is better) or + tolerance."""
    if direction(metric) is Direction.HIGHER_IS_BETTER:
        return reference - tolerance
    return reference + tolerance


def _within(metric: str, value: float, limit: float) -> bool:
    if direction(metric) is Direction.HIGHER_IS_BETTER:
        return value >= limit - EPSILON
    return value <= limit + EPSILON


def _best(metric: str, values: Sequence[tuple[str, float]]) -> tuple[str, float]:
    if direction(metric) is Direction.HIGHER_IS_BETTER:
        return max(values, key=lambda item: item[1])
    return min(values, key=lambda item: item[1])


def _not_reported(name: str, metric: str, threshold: float | None = None) -> GateResult:
    """The gate fails: the candidate cannot show it is good enough on a metric it does not report."""
    return GateResult(
        gate=name, passed=False, threshold=threshold, detail=f"{metric} is not among the candidate's metrics"
    )


def parity_gate(candidate: CandidatePayload) -> GateResult:
    parity = candidate.parity
    submission = candidate.submission
    if submission is not None and submission.sklearn_digest is None and candidate.offered:
        # The metrics are those of the ONNX itself on the platform's holdout; parity compares it with the
        # scikit-learn pipeline it came from, which only the submitter has unless they send it.
        return GateResult(
            gate="parity",
            passed=True,
            detail="not checked: no scikit-learn pipeline (skops) came with the submission; the ONNX model "
            "itself was evaluated on the platform's holdout",
        )
    summary = (
        f"max |onnx - pipeline| {parity.max_abs_diff:.3g} (tolerance {parity.tolerance:.3g}), "
        f"label agreement {parity.label_agreement:.4f} (required {parity.required_label_agreement:.4f}) "
        f"on {parity.rows_checked} rows"
    )
    if parity.passed and candidate.offered:
        return GateResult(
            gate="parity",
            passed=True,
            detail=summary,
            observed=parity.max_abs_diff,
            threshold=parity.tolerance,
        )
    why = parity.reason or "parity check failed"
    return GateResult(
        gate="parity",
        passed=False,
        detail=f"{why}: {summary}",
        observed=parity.max_abs_diff,
        threshold=parity.tolerance,
    )


def bound_gates(metrics: Mapping[str, float], gates: Gates) -> list[GateResult]:
    results = []
    for metric, bound in gates.metrics.items():
        value = metrics.get(metric)
        for side, limit in (("min", bound.min), ("max", bound.max)):
            if limit is None:
                continue
            name = f"{side}:{metric}"
            if value is None:
                results.append(_not_reported(name, metric, threshold=limit))
                continue
            ok = value >= limit - EPSILON if side == "min" else value <= limit + EPSILON
            sign = (">=" if ok else "<") if side == "min" else ("<=" if ok else ">")
            results.append(
                GateResult(
                    gate=name,
                    passed=ok,
                    observed=value,
                    threshold=limit,
                    detail=f"{metric} {_f(value)} {sign} {side} {_f(limit)}",
                )
            )
    return results


def _against(
    name: str, metric: str, value: float, baseline: float, tolerance: float, baseline_label: str
) -> GateResult:
    """The candidate's metric may be worse than ``baseline`` by at most ``tolerance``."""
    limit = _worse_limit(metric, baseline, tolerance)
    ok = _within(metric, value, limit)
    op = "-" if direction(metric) is Direction.HIGHER_IS_BETTER else "+"
    return GateResult(
        gate=name,
        passed=ok,
        observed=value,
        threshold=limit,
        detail=f"{metric} {_f(value)} {'within' if ok else 'beyond'} limit {_f(limit)} "
        f"({baseline_label} {_f(baseline)} {op} tolerance {_f(tolerance)})",
    )


def regression_gates(
    metrics: Mapping[str, float], gates: Gates, production: Baseline | None
) -> list[GateResult]:
    results = []
    for metric, tolerance in gates.regression_tolerance.items():
        name = f"regression:{metric}"
        value = metrics.get(metric)
        if value is None:
            results.append(_not_reported(name, metric))
            continue
        if production is None:
            results.append(
                GateResult(
                    gate=name, passed=True, observed=value, detail="no production version to compare with"
                )
            )
            continue
        reference = production.metrics.get(metric)
        if reference is None:
            results.append(
                GateResult(
                    gate=name,
                    passed=True,
                    observed=value,
                    detail=f"production version {production.version} has no {metric}",
                )
            )
            continue
        results.append(
            _against(name, metric, value, reference, tolerance, f"production {production.version}")
        )
    return results


def degradation_gates(
    metrics: Mapping[str, float], gates: Gates, recent: Sequence[Baseline]
) -> list[GateResult]:
    results = []
    window = list(recent)[: gates.best_of_last]
    for metric, tolerance in gates.degradation_tolerance.items():
        name = f"degradation:{metric}"
        value = metrics.get(metric)
        if value is None:
            results.append(_not_reported(name, metric))
            continue
        known = [(b.version, b.metrics[metric]) for b in window if metric in b.metrics]
        if not known:
            results.append(
                GateResult(
                    gate=name,
                    passed=True,
                    observed=value,
                    detail=f"no earlier version with {metric} to compare with",
                )
            )
            continue
        best_version, best = _best(metric, known)
        results.append(
            _against(name, metric, value, best, tolerance, f"best of last {len(known)}: {best_version}")
        )
    return results


def fairness_gate(candidate: CandidatePayload, gates: Gates) -> list[GateResult]:
    metric, max_gap = gates.fairness_metric, gates.fairness_max_gap
    if metric is None or max_gap is None:
        return []
    name = f"fairness:{metric}"
    gap = candidate.reference.fairness_gap.get(metric)
    if gap is None:
        segment = candidate.reference.segment_field or "no segment field"
        return [
            GateResult(
                gate=name,
                passed=False,
                threshold=max_gap,
                detail=f"no fairness gap for {metric} was reported ({segment})",
            )
        ]
    ok = gap <= max_gap + EPSILON
    return [
        GateResult(
            gate=name,
            passed=ok,
            observed=gap,
            threshold=max_gap,
            detail=f"{metric} gap across {candidate.reference.segment_field or 'segments'} {_f(gap)} "
            f"{'<=' if ok else '>'} max {_f(max_gap)}",
        )
    ]


def sophistication_gates(candidate: CandidatePayload, gates: Gates) -> list[GateResult]:
    """The candidate beats each simple baseline trained on its rows by the configured margin."""
    rule = gates.cost_of_sophistication
    if rule is None:
        return []
    metric, margin = rule.metric, rule.margin
    value = candidate.metrics.get(metric)
    if not candidate.baselines:
        return [
            GateResult(
                gate="cost of sophistication",
                passed=False,
                detail="the candidate reports no baselines to compare with",
            )
        ]
    results = []
    for name, metrics in sorted(candidate.baselines.items()):
        gate = f"cost of sophistication:{name}"
        reference = metrics.get(metric)
        if value is None:
            results.append(_not_reported(gate, metric))
            continue
        if reference is None:
            results.append(
                GateResult(gate=gate, passed=True, observed=value, detail=f"{name} reports no {metric}")
            )
            continue
        limit = _worse_limit(metric, reference, -margin)  # better than the baseline by the margin
        ok = _within(metric, value, limit)
        results.append(
            GateResult(
                gate=gate,
                passed=ok,
                observed=value,
                threshold=limit,
                detail=f"{metric} {_f(value)} {'beats' if ok else 'does not beat'} the {name} baseline's "
                f"{_f(reference)} by the margin {_f(margin)}",
            )
        )
    return results


def evaluate_gates(
    candidate: CandidatePayload,
    gates: Gates,
    production: Baseline | None,
    recent: Sequence[Baseline],
) -> list[GateResult]:
    """Every configured gate's result for ``candidate``.

    ``production`` is the current production version (None when there is none); ``recent`` are the versions
    that passed their gates, newest first (only the first ``gates.best_of_last`` are used).
    """
    results: list[GateResult] = []
    if gates.require_parity:
        results.append(parity_gate(candidate))
    results += bound_gates(candidate.metrics, gates)
    results += regression_gates(candidate.metrics, gates, production)
    results += degradation_gates(candidate.metrics, gates, recent)
    results += fairness_gate(candidate, gates)
    results += sophistication_gates(candidate, gates)
    return results


def first_failure(results: Sequence[GateResult]) -> GateResult | None:
    return next((r for r in results if not r.passed), None)


def rejection_reason(results: Sequence[GateResult]) -> str:
    """``gate <name> failed: <detail>`` for the first failing gate, plus the names of the others."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return ""
    reason = f"gate {failed[0].gate} failed: {failed[0].detail}"
    if len(failed) > 1:
        reason += f" (also failed: {', '.join(r.gate for r in failed[1:])})"
    return reason
