"""The validator's rules: the contract's (compiled by ``tollgate_core.contract_rules``, shared with the
gateway and the scorer) and the statistical expectations of a model's training reference. No Kafka, HTTP or
database here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tollgate_core.reference import CategorySummary, NumericSummary, ReferenceProfile, category_key


class Expectations:
    """Statistical expectations from a model's training reference: flags values far outside what training saw.

    A number is flagged when it lies beyond the 0.1%/99.9% training quantiles by more than ``iqr_factor``
    inter-quartile ranges; a category is flagged when training never saw it. Flags mark an event, they do
    not reject it: the contract decides validity, the reference only says "unusual".
    """

    def __init__(self, reference: ReferenceProfile, iqr_factor: float = 3.0) -> None:
        self.reference = reference
        self._numeric: list[tuple[str, float, float]] = []
        self._categories: list[tuple[str, frozenset[str]]] = []
        for name, summary in reference.features.items():
            if isinstance(summary, NumericSummary):
                q = summary.quantiles
                low_q = q.get("0.001", summary.min)
                high_q = q.get("0.999", summary.max)
                iqr = q.get("0.75", summary.max) - q.get("0.25", summary.min)
                pad = iqr_factor * (iqr if iqr > 0 else max(abs(summary.std), 1e-9))
                self._numeric.append((name, low_q - pad, high_q + pad))
            elif isinstance(summary, CategorySummary):
                self._categories.append((name, frozenset(k for k, v in summary.frequencies.items() if v > 0)))

    def flags(self, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for name, lo, hi in self._numeric:
            value = payload.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and not lo <= value <= hi:
                found.append(
                    {
                        "field": name,
                        "check": "outside_training_range",
                        "value": value,
                        "expected": f"[{lo:.6g}, {hi:.6g}]",
                    }
                )
        for name, seen in self._categories:
            value = payload.get(name)
            if value is None:
                continue
            shown = category_key(value) if isinstance(value, bool) else value
            if isinstance(shown, str) and shown not in seen:
                found.append(
                    {
                        "field": name,
                        "check": "unseen_category",
                        "value": value,
                        "expected": ", ".join(sorted(seen))[:200],
                    }
                )
        return found
