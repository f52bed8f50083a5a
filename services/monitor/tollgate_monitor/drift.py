"""Drift between a live window and a version's training reference, from bin counts, vectorised over features.

The monitor never keeps raw values: a window is a matrix of counts per feature and bin, binned with the
reference's own bins (equal-frequency edges for numbers, the category list for categories). Counts add up,
so windows from several batches, partitions or steps merge by addition, and a window checkpoints in a few
hundred integers. Every statistic below is computed for all features at once from those matrices.

Per feature the monitor reports:

* PSI, the population stability index, sum((q - p) * ln(q / p)) over bins, zero shares replaced by 1e-4 (as
  Evidently does) so an empty bin does not make it infinite;
* the Jensen-Shannon distance (``scipy.spatial.distance.jensenshannon``, natural log), bounded in [0, 0.83];
* for numbers, the first Wasserstein distance in reference standard deviations, integrated from the two
  CDFs at the reference's bin edges (between the reference minimum and maximum) -- an approximation, since
  only bin counts are kept, reported and never deciding;
* the Pearson chi-square p-value of the live counts against the reference shares (``scipy.stats.chi2``).

The decision is made on an effect size only: PSI for numbers, Jensen-Shannon distance for categories and
booleans. The p-value is reported for people who ask for it; with large windows it is ~0 for any harmless
shift, which is exactly the false alarm the monitor avoids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2

from tollgate_core.reference import CategorySummary, NumericSummary, ReferenceProfile, category_key

PSI_EPSILON = 1e-4  # share used in place of an empty bin's zero
MIN_STD = 1e-3  # floor of the Wasserstein normaliser, for constant reference features

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True)
class NumericLayout:
    """The reference bins of the numeric fields, padded to one width so that one array op covers them all.

    ``edges`` are padded with +inf (no value reaches a padded bin); the reference shares of padded bins are
    0, so they contribute nothing to any statistic. Counts have one more column than bins: nulls.
    """

    names: tuple[str, ...]
    edges: FloatArray  # (F, E)
    reference: FloatArray  # (F, E + 1) shares of non-null reference values per bin
    support: FloatArray  # (F, E + 2): reference min, inner edges (padding: max), reference max
    std: FloatArray  # (F,)
    null_fraction: FloatArray  # (F,)

    @property
    def bins(self) -> int:
        return int(self.edges.shape[1]) + 1

    @classmethod
    def build(cls, names: Sequence[str], summaries: Sequence[NumericSummary]) -> NumericLayout:
        width = max((len(s.bin_edges) for s in summaries), default=0)
        f = len(summaries)
        edges = np.full((f, width), np.inf)
        reference = np.zeros((f, width + 1))
        support = np.zeros((f, width + 2))
        for i, s in enumerate(summaries):
            e = len(s.bin_edges)
            edges[i, :e] = s.bin_edges
            shares = np.asarray(s.bin_fractions, dtype=np.float64)
            reference[i, : len(shares)] = shares / shares.sum() if shares.sum() > 0 else shares
            support[i, 0] = min(s.min, s.bin_edges[0]) if e else s.min
            support[i, 1 : e + 1] = s.bin_edges
            support[i, e + 1 :] = max(s.max, s.bin_edges[-1]) if e else s.max
        return cls(
            names=tuple(names),
            edges=edges,
            reference=reference,
            support=support,
            std=np.array([s.std for s in summaries], dtype=np.float64),
            null_fraction=np.array([s.null_fraction for s in summaries], dtype=np.float64),
        )

    def count(self, values: FloatArray) -> IntArray:
        """Counts per feature and bin (last column: nulls) of an (n, F) matrix, NaN meaning null."""
        n, f = values.shape
        width = self.bins + 1
        if f == 0 or n == 0:
            return np.zeros((f, width), dtype=np.int64)
        # Bin i holds the values with exactly i edges <= v, the rule the trainer binned the reference with
        # (searchsorted side="right"). One searchsorted per feature over the whole window column (each has
        # its own edges), then a single bincount over all features at once.
        index = np.empty((n, f), dtype=np.int64)
        for j in range(f):
            index[:, j] = np.searchsorted(self.edges[j], values[:, j], side="right")
        index[np.isnan(values)] = self.bins
        flat = index + np.arange(f)[None, :] * width
        return np.bincount(flat.ravel(), minlength=f * width).reshape(f, width).astype(np.int64)


@dataclass(frozen=True)
class CategoryLayout:
    """Category and boolean fields: one column per known category, then "unseen", then nulls."""

    names: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]
    reference: FloatArray  # (F, K + 1), the unseen column is 0
    null_fraction: FloatArray

    @property
    def width(self) -> int:
        return int(self.reference.shape[1]) + 1

    @classmethod
    def build(cls, names: Sequence[str], summaries: Sequence[CategorySummary]) -> CategoryLayout:
        values = tuple(tuple(s.frequencies) for s in summaries)
        k = max((len(v) for v in values), default=0)
        reference = np.zeros((len(summaries), k + 1))
        for i, s in enumerate(summaries):
            shares = np.array(list(s.frequencies.values()), dtype=np.float64)
            total = shares.sum()
            reference[i, : len(shares)] = shares / total if total > 0 else shares
        return cls(
            tuple(names), values, reference, np.array([s.null_fraction for s in summaries], dtype=np.float64)
        )

    def count(self, columns: Sequence[Sequence[Any]]) -> IntArray:
        """Counts per feature and category (then unseen, then nulls) of one value list per feature."""
        width = self.width
        counts = np.zeros((len(self.names), width), dtype=np.int64)
        unseen = width - 2
        for i, (index, column) in enumerate(zip(self._indexes, columns, strict=True)):
            # Values are looked up as they come (strings, booleans, None); only a miss pays for converting
            # the value to the reference's text form (e.g. an integer category) before it counts as unseen.
            # Values come from JSON, whose only null is None: it is in every index (the null column).
            codes = [index[v] if v in index else index.get(category_key(v), unseen) for v in column]
            counts[i] = np.bincount(np.asarray(codes, dtype=np.int64), minlength=width)
        return counts

    @cached_property
    def _indexes(self) -> list[dict[Any, int]]:
        null = self.width - 1
        out = []
        for known in self.values:
            index: dict[Any, int] = {v: j for j, v in enumerate(known)}
            if "true" in index and "false" in index:
                index.update({True: index["true"], False: index["false"]})
            index[None] = null
            out.append(index)
        return out


@dataclass(frozen=True)
class Layout:
    """Everything needed to bin a version's inference records and compare them with its reference."""

    numeric: NumericLayout
    category: CategoryLayout
    prediction: NumericLayout  # a one-feature numeric layout for the model's score

    @classmethod
    def from_reference(cls, profile: ReferenceProfile) -> Layout:
        numeric = [(n, s) for n, s in profile.features.items() if isinstance(s, NumericSummary)]
        category = [(n, s) for n, s in profile.features.items() if isinstance(s, CategorySummary)]
        return cls(
            numeric=NumericLayout.build([n for n, _ in numeric], [s for _, s in numeric]),
            category=CategoryLayout.build([n for n, _ in category], [s for _, s in category]),
            prediction=NumericLayout.build(["prediction"], [profile.prediction]),
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.numeric.names + self.category.names

    def numeric_matrix(self, records: Sequence[Mapping[str, Any]]) -> FloatArray:
        """(n, F) float matrix of the numeric features of ``records``; missing or null values are NaN."""
        names = self.numeric.names
        if not names:
            return np.zeros((len(records), 0))
        pick = itemgetter(*names) if len(names) > 1 else (lambda r: (r[names[0]],))
        try:
            rows: list[Any] = [pick(r) for r in records]
        except KeyError:  # a record without some field: that value is null
            rows = [[r.get(name) for name in names] for r in records]
        try:
            return np.array(rows, dtype=np.float64).reshape(len(records), len(names))
        except (TypeError, ValueError):  # a stray non-number: convert value by value, unusable ones as null
            return np.array([[_as_float(v) for v in row] for row in rows], dtype=np.float64).reshape(
                len(records), len(names)
            )

    def category_columns(self, records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        return [[r.get(name) for r in records] for name in self.category.names]


def _as_float(value: Any) -> float:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else np.nan
    except (TypeError, ValueError):
        return np.nan


@dataclass(frozen=True)
class DriftTable:
    """Drift statistics of every feature of one window (arrays aligned with ``names``)."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # numeric | category
    rows: IntArray  # non-null live values per feature
    null_fraction: FloatArray
    psi: FloatArray
    js: FloatArray
    wasserstein: FloatArray  # NaN for categories
    p_value: FloatArray
    effect: FloatArray  # the deciding statistic: PSI for numbers, JS distance for categories
    threshold: FloatArray
    drifted: np.ndarray[Any, np.dtype[np.bool_]]

    def tests(self) -> tuple[str, ...]:
        return tuple("psi" if k == "numeric" else "jensen_shannon" for k in self.kinds)

    def as_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per feature (NaN as None)."""
        out = []
        tests = self.tests()
        for i, name in enumerate(self.names):
            out.append(
                {
                    "feature": name,
                    "kind": self.kinds[i],
                    "test": tests[i],
                    "rows": int(self.rows[i]),
                    "null_fraction": _num(self.null_fraction[i]),
                    "psi": _num(self.psi[i]),
                    "js": _num(self.js[i]),
                    "wasserstein": _num(self.wasserstein[i]),
                    "p_value": _num(self.p_value[i]),
                    "effect": _num(self.effect[i]),
                    "threshold": float(self.threshold[i]),
                    "drifted": bool(self.drifted[i]),
                }
            )
        return out


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def psi(reference: FloatArray, live: FloatArray) -> FloatArray:
    """PSI per row of two (F, B) share matrices."""
    p = np.where(reference > 0, reference, PSI_EPSILON)
    q = np.where(live > 0, live, PSI_EPSILON)
    return np.asarray(np.sum((q - p) * np.log(q / p), axis=1), dtype=np.float64)


def js_distance(reference: FloatArray, live: FloatArray) -> FloatArray:
    """Jensen-Shannon distance (natural log) per row; rows without live data are NaN."""
    out = np.full(reference.shape[0], np.nan)
    ok = (live.sum(axis=1) > 0) & (reference.sum(axis=1) > 0)
    if ok.any():
        out[ok] = jensenshannon(reference[ok], live[ok], axis=1)
    return out


def chi_square_p(reference: FloatArray, counts: IntArray) -> FloatArray:
    """Pearson chi-square goodness-of-fit p-value of live counts against reference shares, per row.

    Bins with no reference share are left out of the sum, unless live values fell in them: then the fit is
    impossible and p is 0. Equivalent to ``scipy.stats.chisquare(counts, shares * n)`` on the kept bins.
    """
    n = counts.sum(axis=1, keepdims=True).astype(np.float64)
    expected = reference * n
    valid = reference > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(valid, (counts - expected) ** 2 / np.where(valid, expected, 1.0), 0.0)
    stat = terms.sum(axis=1)
    dof = valid.sum(axis=1) - 1
    impossible = ((~valid) & (counts > 0)).any(axis=1)
    p = np.where(dof > 0, chi2.sf(stat, np.maximum(dof, 1)), 1.0)
    p = np.where(impossible, 0.0, p)
    return np.where(n[:, 0] > 0, p, np.nan)


def wasserstein_normed(layout: NumericLayout, shares: FloatArray) -> FloatArray:
    """W1 between live and reference, in reference standard deviations, from the CDFs at the bin edges."""
    ref_cdf = np.cumsum(layout.reference, axis=1)[:, :-1]
    live_cdf = np.cumsum(shares, axis=1)[:, :-1]
    gap = np.abs(live_cdf - ref_cdf)
    gap = np.concatenate([np.zeros((gap.shape[0], 1)), gap, np.zeros((gap.shape[0], 1))], axis=1)
    widths = np.diff(layout.support, axis=1)
    area = np.sum((gap[:, :-1] + gap[:, 1:]) / 2 * widths, axis=1)
    return np.asarray(area / np.maximum(layout.std, MIN_STD), dtype=np.float64)


def _shares(counts: IntArray) -> tuple[FloatArray, IntArray]:
    """Shares among the non-null values (nulls are the last column), and how many there were."""
    values = counts[:, :-1].astype(np.float64)
    rows = values.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(rows[:, None] > 0, values / np.where(rows > 0, rows, 1.0)[:, None], 0.0)
    return shares, rows.astype(np.int64)


def numeric_drift(layout: NumericLayout, counts: IntArray, threshold: float) -> DriftTable:
    shares, rows = _shares(counts)
    total = counts.sum(axis=1)
    value = psi(layout.reference, shares)
    live = rows > 0
    value = np.where(live, value, np.nan)
    return DriftTable(
        names=layout.names,
        kinds=("numeric",) * len(layout.names),
        rows=rows,
        null_fraction=np.where(total > 0, counts[:, -1] / np.maximum(total, 1), np.nan),
        psi=value,
        js=js_distance(layout.reference, shares),
        wasserstein=np.where(live, wasserstein_normed(layout, shares), np.nan),
        p_value=chi_square_p(layout.reference, counts[:, :-1]),
        effect=value,
        threshold=np.full(len(layout.names), threshold),
        drifted=np.where(live, value >= threshold, False),
    )


def category_drift(layout: CategoryLayout, counts: IntArray, threshold: float) -> DriftTable:
    shares, rows = _shares(counts)
    total = counts.sum(axis=1)
    distance = js_distance(layout.reference, shares)
    live = rows > 0
    return DriftTable(
        names=layout.names,
        kinds=("category",) * len(layout.names),
        rows=rows,
        null_fraction=np.where(total > 0, counts[:, -1] / np.maximum(total, 1), np.nan),
        psi=np.where(live, psi(layout.reference, shares), np.nan),
        js=distance,
        wasserstein=np.full(len(layout.names), np.nan),
        p_value=chi_square_p(layout.reference, counts[:, :-1]),
        effect=distance,
        threshold=np.full(len(layout.names), threshold),
        drifted=np.where(live, np.nan_to_num(distance, nan=0.0) >= threshold, False),
    )


def feature_drift(
    layout: Layout,
    numeric_counts: IntArray,
    category_counts: IntArray,
    psi_threshold: float,
    js_threshold: float,
) -> DriftTable:
    """Drift of every feature of one window, numbers first, in the reference's feature order per kind."""
    a = numeric_drift(layout.numeric, numeric_counts, psi_threshold)
    b = category_drift(layout.category, category_counts, js_threshold)
    return DriftTable(
        names=a.names + b.names,
        kinds=a.kinds + b.kinds,
        rows=np.concatenate([a.rows, b.rows]),
        null_fraction=np.concatenate([a.null_fraction, b.null_fraction]),
        psi=np.concatenate([a.psi, b.psi]),
        js=np.concatenate([a.js, b.js]),
        wasserstein=np.concatenate([a.wasserstein, b.wasserstein]),
        p_value=np.concatenate([a.p_value, b.p_value]),
        effect=np.concatenate([a.effect, b.effect]),
        threshold=np.concatenate([a.threshold, b.threshold]),
        drifted=np.concatenate([a.drifted, b.drifted]),
    )
