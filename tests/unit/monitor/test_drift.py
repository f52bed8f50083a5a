"""Drift statistics against hand-computed values and scipy's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare

from tollgate_core.reference import CategorySummary, NumericSummary, ReferenceProfile
from tollgate_monitor.drift import (
    CategoryLayout,
    Layout,
    NumericLayout,
    category_drift,
    chi_square_p,
    js_distance,
    numeric_drift,
    psi,
    wasserstein_normed,
)


def uniform_summary(low: float = 0.0, high: float = 10.0) -> NumericSummary:
    """Summary of a uniform distribution on [low, high] with 10 equal-frequency bins."""
    edges = [low + (high - low) * i / 10 for i in range(1, 10)]
    return NumericSummary(
        count=1000,
        null_fraction=0.0,
        mean=(low + high) / 2,
        std=(high - low) / math.sqrt(12),
        min=low,
        max=high,
        quantiles={},
        bin_edges=edges,
        bin_fractions=[0.1] * 10,
    )


def test_psi_by_hand() -> None:
    value = psi(np.array([[0.5, 0.5]]), np.array([[0.6, 0.4]]))[0]
    expected = 0.1 * math.log(0.6 / 0.5) + (-0.1) * math.log(0.4 / 0.5)
    assert value == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.040546, abs=1e-6)
    # An empty bin counts as a share of 1e-4, so PSI stays finite.
    assert psi(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]]))[0] == pytest.approx(
        0.5 * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    )


def test_js_distance_matches_scipy_and_bounds() -> None:
    p = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.25, 0.5], [0.0, 1.0, 0.0]])
    got = js_distance(p, q)
    assert got[0] == pytest.approx(jensenshannon(p[0], q[0]))
    assert got[1] == pytest.approx(math.sqrt(math.log(2)))  # disjoint supports: the maximum, sqrt(ln 2)
    assert math.isnan(js_distance(p[:1], np.zeros((1, 3)))[0])  # no live data: undefined, not zero


def test_chi_square_matches_scipy() -> None:
    shares = np.array([[0.2, 0.3, 0.5, 0.0]])
    counts = np.array([[30, 25, 45, 0]])
    expected = chisquare(counts[0, :3], shares[0, :3] * 100).pvalue
    assert chi_square_p(shares, counts)[0] == pytest.approx(expected)
    assert chi_square_p(shares, np.array([[30, 25, 44, 1]]))[0] == 0.0  # a value where the reference had none


def test_binning_follows_the_reference_rule_and_counts_nulls() -> None:
    layout = NumericLayout.build(["a", "b"], [uniform_summary(), uniform_summary(0, 1)])
    values = np.array([[0.5, 0.05], [1.0, 0.1], [9.99, np.nan], [12.0, 0.95], [np.nan, -3.0]])
    counts = layout.count(values)
    edges = np.array(layout.edges[0])
    for j in range(2):
        col = values[:, j]
        present = col[~np.isnan(col)]
        want = np.bincount(np.searchsorted(edges / (10 if j else 1), present, side="right"), minlength=10)
        assert counts[j, :10].tolist() == want.tolist()
        assert counts[j, 10] == int(np.isnan(col).sum())


def test_padded_features_with_fewer_bins() -> None:
    short = NumericSummary(
        count=10,
        null_fraction=0.0,
        mean=0.5,
        std=0.5,
        min=0,
        max=1,
        quantiles={},
        bin_edges=[0.5],
        bin_fractions=[0.5, 0.5],
    )
    layout = NumericLayout.build(["a", "b"], [uniform_summary(), short])
    counts = layout.count(np.array([[1.0, 0.2], [9.5, 0.7], [5.5, 0.9]]))
    assert counts[1].tolist() == [1, 2] + [0] * 9  # two real bins, padding stays empty, no nulls
    table = numeric_drift(layout, counts, 0.2)
    assert np.isfinite(table.psi).all()


def test_wasserstein_of_a_shift_is_close_to_the_shift() -> None:
    layout = NumericLayout.build(["a"], [uniform_summary()])
    rng = np.random.default_rng(0)
    shifted = rng.uniform(1.0, 11.0, size=(20_000, 1))
    counts = layout.count(shifted)
    shares = counts[:, :-1] / counts[:, :-1].sum()
    got = wasserstein_normed(layout, shares)[0]
    true = 1.0 / layout.std[0]
    assert got == pytest.approx(true, rel=0.15)  # only the CDF at the bin edges is known: an approximation


def test_numeric_verdict_on_effect_size() -> None:
    layout = NumericLayout.build(["a"], [uniform_summary()])
    rng = np.random.default_rng(1)
    same = numeric_drift(layout, layout.count(rng.uniform(0, 10, size=(5000, 1))), 0.2)
    moved = numeric_drift(layout, layout.count(rng.uniform(3, 13, size=(5000, 1))), 0.2)
    assert not same.drifted[0] and same.psi[0] < 0.02
    assert moved.drifted[0] and moved.psi[0] > 0.2
    # The p-value of the clean window is unremarkable; it never decides on its own either way.
    assert same.p_value[0] > 1e-3 and moved.p_value[0] < 1e-12


def test_categories_booleans_unseen_and_nulls() -> None:
    colours = CategorySummary(count=100, null_fraction=0.0, frequencies={"red": 0.5, "blue": 0.5})
    flag = CategorySummary(count=100, null_fraction=0.1, frequencies={"false": 0.25, "true": 0.75})
    layout = CategoryLayout.build(["colour", "flag"], [colours, flag])
    counts = layout.count([["red", "blue", "green", None], [True, True, False, None]])
    assert counts[0].tolist() == [1, 1, 1, 1]  # red, blue, unseen, null
    assert counts[1].tolist() == [1, 2, 0, 1]  # false, true, unseen, null
    table = category_drift(layout, counts, 0.1)
    assert table.js[1] == pytest.approx(jensenshannon([0.25, 0.75, 0], [1 / 3, 2 / 3, 0]))
    assert table.p_value[0] == 0.0  # an unseen category cannot fit the reference


def test_layout_from_a_real_reference(reference: ReferenceProfile) -> None:
    layout = Layout.from_reference(reference)
    assert set(layout.feature_names) == set(reference.features)
    assert len(layout.numeric.names) == 15 and len(layout.category.names) == 5
    assert layout.prediction.reference.sum() == pytest.approx(1.0)
