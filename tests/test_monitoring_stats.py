"""Monitoring statistics against values worked out by hand or published."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mammo_pipeline.monitoring.stats import (
    drift_test,
    ks_test,
    psi_quantile,
    rate_check,
    realised_performance,
)
from mammo_pipeline.monitoring.windows import window_bounds


def test_psi_over_reference_deciles_matches_the_formula():
    ref = np.arange(1000, dtype=float)  # deciles: 100 per bin
    win = np.concatenate([np.full(50, 50.0), np.full(50, 950.0)])  # half in the first, half last
    # bins 1 and 10 hold 0.5 each (vs 0.1), the eight others 0 (floored at 1e-4)
    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi_quantile(ref, win) == pytest.approx(expected, rel=1e-9)
    assert psi_quantile(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_ks_exact_small_samples():
    stat, p = ks_test(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert stat == 1.0 and p == pytest.approx(0.1)  # 2 / C(6, 3)


def test_drift_needs_both_a_large_psi_and_a_small_p():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    same = drift_test("x", ref, rng.normal(size=300), 0.2, 0.01)
    assert not same.drift and same.p_value > 0.01
    shifted = drift_test("x", ref, rng.normal(size=300) + 1.0, 0.2, 0.01)
    assert shifted.drift and shifted.psi > 0.2 and shifted.p_value < 1e-10
    # significant but small: a large window with a slight shift is not an alert
    slight = drift_test("x", ref, rng.normal(size=50_000) + 0.1, 0.2, 0.01)
    assert slight.p_value < 0.01 and slight.psi < 0.2 and not slight.drift


def test_non_finite_samples_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        drift_test("score", np.array([0.1, 0.2]), np.array([0.3, np.nan]), 0.2, 0.01)


def test_rate_check_uses_the_wilson_interval():
    check = rate_check(8, 10, 0.5, 0.05)
    assert (check.interval.low, check.interval.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert not check.outside  # 0.5 lies inside
    assert rate_check(80, 100, 0.5, 0.05).outside
    with pytest.raises(ValueError):
        rate_check(1, 2, float("nan"), 0.05)


def test_realised_performance_counts_and_undefined():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    perf = realised_performance(truth, pred)
    assert (perf["sensitivity"].point, perf["sensitivity"].n) == (0.75, 4)
    assert (perf["specificity"].point, perf["specificity"].n) == (5 / 6, 6)
    assert (perf["ppv"].point, perf["ppv"].n) == (0.75, 4)
    none = realised_performance(np.zeros(3, bool), np.zeros(3, bool))
    assert none["sensitivity"].n == 0 and not none["sensitivity"].defined  # never 0 or 1


def test_windows_end_at_the_report_end():
    bounds = window_bounds(0.0, 10 * 3600.0, 4.0)
    assert bounds == [(0.0, 7200.0), (7200.0, 21600.0), (21600.0, 36000.0)]
