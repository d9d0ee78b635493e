"""Tests of mammo_pipeline.stats: intervals, weighted rank metrics, DeLong, paired bootstrap.

Independent references: Newcombe (1998) for Wilson intervals, scikit-learn for the metrics
and for a plain (index-resampling) bootstrap, a hand computation and an O(m n) pairwise
computation for DeLong, and a seeded simulation with known true AUCs and sensitivities for
the coverage of the bootstrap intervals. All data are SYNTHETIC.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mammo_pipeline.errors import DataError, MammoError
from mammo_pipeline.stats import (
    Interval,
    PairedComparison,
    StatsInputError,
    average_precision,
    compare_paired,
    operating_point,
    roc_auc,
    sensitivity_at_specificity,
    threshold_for_specificity,
    wilson_interval,
)
from mammo_pipeline.stats.bootstrap import stratified_count_chunks
from mammo_pipeline.stats.delong import delong_paired
from mammo_pipeline.stats.paired import PairedStatistic

PHI = NormalDist().cdf


def _two_models(n: int, prevalence: float, seed: int, *, gap: float = 0.0, tie_step=None):
    """SYNTHETIC labels and correlated candidate/reference scores (candidate ``gap`` better)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]  # both classes present
    shared = rng.standard_normal(n)
    ref = 1.2 * y + 0.7 * shared + 0.7 * rng.standard_normal(n)
    cand = (1.2 + gap) * y + 0.7 * shared + 0.7 * rng.standard_normal(n)
    if tie_step is not None:
        ref, cand = np.round(ref / tie_step) * tie_step, np.round(cand / tie_step) * tie_step
    return y, cand, ref


# --- Wilson ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score, no correction)
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_table(k, n, low, high):
    interval = wilson_interval(k, n)
    assert interval.point == pytest.approx(k / n)
    assert round(interval.low, 4) == low
    assert round(interval.high, 4) == high
    assert interval.n == n


def test_wilson_recall_of_43_positives_is_about_plus_minus_011():
    interval = wilson_interval(36, 43)
    assert interval.low == pytest.approx(0.700, abs=5e-4)
    assert interval.high == pytest.approx(0.919, abs=5e-4)
    assert interval.lower_bound_at_least(0.70)
    assert not interval.lower_bound_at_least(0.80)
    assert interval.point_at_least(0.80)
    assert wilson_interval(36, 43, confidence=0.99).low < interval.low
    assert wilson_interval(43, 43).high == 1.0


def test_wilson_of_zero_trials_is_undefined_and_fails_closed():
    interval = wilson_interval(0, 0)
    assert not interval.defined
    assert not interval.lower_bound_at_least(0.0)
    assert not interval.point_at_least(0.0)
    as_json = json.dumps(interval.to_dict(), allow_nan=False)
    assert json.loads(as_json)["low"] is None
    assert not Interval.from_dict(json.loads(as_json)).defined
    assert interval.describe() == "undefined (n=0)"


@pytest.mark.parametrize(("k", "n"), [(5, 4), (-1, 4), (1.5, 4), (1, -2), (True, 3)])
def test_wilson_rejects_impossible_counts(k, n):
    with pytest.raises(StatsInputError):
        wilson_interval(k, n)


# --- weighted metrics --------------------------------------------------------------------------


def test_metrics_equal_scikit_learn_with_ties_and_count_weights():
    rng = np.random.default_rng(3)
    checked = 0
    for trial in range(150):
        n = int(rng.integers(3, 80))
        y = rng.integers(0, 2, n)
        # half the trials: scores on a coarse grid (many ties), half continuous
        s = rng.integers(0, 6, n) / 5.0 if trial % 2 else rng.random(n)
        w = rng.integers(0, 4, n)  # counts from resampling, zeros included
        if y.min() == y.max() or (w * y).sum() == 0 or (w * (1 - y)).sum() == 0:
            continue
        checked += 1
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
        assert average_precision(y, s, w) == pytest.approx(
            average_precision_score(y, s, sample_weight=w), abs=1e-12
        )
    assert checked > 100


def test_count_weights_equal_repeating_the_tiles():
    y, cand, _ = _two_models(300, 0.2, 5, tie_step=0.25)
    w = np.random.default_rng(6).integers(0, 5, y.size)
    rep = np.repeat(np.arange(y.size), w)
    assert roc_auc(y, cand, w) == pytest.approx(roc_auc(y[rep], cand[rep]), abs=1e-12)
    assert average_precision(y, cand, w) == pytest.approx(
        average_precision(y[rep], cand[rep]), abs=1e-12
    )


def test_threshold_for_specificity_is_lowest_observed_score_reaching_it():
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.4, 0.3, 0.7, 0.35, 0.2, 0.1]
    # specificity(t) = share of negatives below t: t=0.4 leaves 3 of 4 below, t=0.35 only 2
    assert threshold_for_specificity(y, s, 0.75) == 0.4
    assert sensitivity_at_specificity(y, s, 0.75) == 0.75
    assert threshold_for_specificity(y, s, 0.0) == 0.1  # everything called positive
    assert threshold_for_specificity(y, s, 1.0) == 0.8  # above the top negative (0.7)
    # a negative holds the top score: specificity 1 needs a threshold above every score
    t = threshold_for_specificity([0, 1], [0.9, 0.5], 1.0)
    assert t > 0.9 and operating_point([0, 1], [0.9, 0.5], t).tp == 0


def test_threshold_rule_agrees_with_a_scan_of_all_thresholds():
    rng = np.random.default_rng(11)
    for _ in range(60):
        n = int(rng.integers(4, 40))
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = rng.integers(0, 8, n) / 7.0
        w = rng.integers(0, 3, n)
        w[:2] = 1
        target = float(rng.random())
        candidates = np.append(np.unique(s), np.nextafter(s.max(), np.inf))
        scan = min(t for t in candidates if operating_point(y, s, t, w).specificity >= target)
        assert threshold_for_specificity(y, s, target, w) == scan


def test_operating_point_counts_rates_and_undefined_precision():
    op = operating_point([1, 1, 0, 0, 0], [0.9, 0.2, 0.8, 0.1, 0.5], 0.5)
    assert (op.tp, op.fp, op.tn, op.fn) == (1, 2, 1, 1)
    assert op.sensitivity == 0.5 and op.specificity == pytest.approx(1 / 3)
    assert op.precision == pytest.approx(1 / 3)
    assert op.intervals()["sensitivity"].n == 2
    nothing = operating_point([1, 0], [0.2, 0.1], 0.5)
    assert math.isnan(nothing.precision)
    assert nothing.to_dict()["precision"] is None
    assert not nothing.intervals()["precision"].lower_bound_at_least(0.0)


def test_metric_inputs_are_checked():
    with pytest.raises(StatsInputError, match="no positive tile"):
        roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(StatsInputError, match=r"non-finite score.*index 1"):
        average_precision([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(StatsInputError, match=r"not 0 or 1 .*index 2"):
        roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(StatsInputError, match="integer counts"):
        roc_auc([0, 1], [0.1, 0.2], sample_weight=[1, 0.5])
    with pytest.raises(StatsInputError, match="specificity must lie"):
        threshold_for_specificity([0, 1], [0.1, 0.2], 1.5)


# --- DeLong ------------------------------------------------------------------------------------


def test_delong_hand_computed_example():
    # candidate: positives 0.9, 0.6 / negatives 0.7, 0.3, 0.1 -> AUC 5/6
    # reference: positives 0.8, 0.2 / negatives 0.5, 0.2, 0.4 -> AUC 7/12 (one tie)
    # placements: V10 cand [1, 2/3], ref [1, 1/6]; V01 cand [1/2, 1, 1], ref [1/2, 3/4, 1/2]
    # var(cand) = 1/18, var(ref) = 13/72, cov = 11/144 -> var(delta) = 1/12
    y = np.array([1, 1, 0, 0, 0], dtype=bool)
    test = delong_paired(
        y, np.array([0.9, 0.6, 0.7, 0.3, 0.1]), np.array([0.8, 0.2, 0.5, 0.2, 0.4])
    )
    assert test.candidate_auc == pytest.approx(5 / 6)
    assert test.reference_auc == pytest.approx(7 / 12)
    assert test.delta == pytest.approx(1 / 4)
    assert test.variance == pytest.approx(1 / 12)
    assert test.z == pytest.approx(math.sqrt(3) / 2)
    assert test.p_value == pytest.approx(2 * PHI(-math.sqrt(3) / 2))


def _delong_variance_pairwise(y, a, b):
    """DeLong's variance of AUC(a) - AUC(b) from the full m x n kernel (no sorting)."""
    pos, neg = y == 1, y == 0
    v10, v01 = [], []
    for s in (a, b):
        diff = s[pos][:, None] - s[neg][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(v10), np.cov(v01)
    cov = s10 / pos.sum() + s01 / neg.sum()
    return cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def test_delong_equals_pairwise_kernel_with_ties():
    for seed in range(5):
        y, cand, ref = _two_models(150, 0.3, seed, tie_step=0.5)
        test = delong_paired(y == 1, cand, ref)
        assert test.variance == pytest.approx(_delong_variance_pairwise(y, cand, ref), rel=1e-12)
        assert test.delta == pytest.approx(roc_auc_score(y, cand) - roc_auc_score(y, ref))


def test_delong_variance_matches_the_spread_over_repeated_test_sets():
    rng = np.random.default_rng(21)
    y = np.r_[np.ones(30), np.zeros(90)]
    deltas, variances = [], []
    for _ in range(1500):
        z1 = rng.standard_normal(y.size)
        z2 = 0.6 * z1 + 0.8 * rng.standard_normal(y.size)
        test = delong_paired(y == 1, 1.4 * y + z2, 1.0 * y + z1)
        deltas.append(test.delta)
        variances.append(test.variance)
    ratio = np.mean(variances) / np.var(deltas, ddof=1)
    assert 0.85 < ratio < 1.15


# --- bootstrap resamples -----------------------------------------------------------------------


def test_stratified_counts_keep_class_sizes_and_ignore_chunking():
    big = list(stratified_count_chunks(7, 13, 60, seed=4, chunk=60))
    small = list(stratified_count_chunks(7, 13, 60, seed=4, chunk=7))
    pos = np.hstack([p for p, _ in small])
    neg = np.hstack([q for _, q in small])
    assert pos.shape == (7, 60) and neg.shape == (13, 60)
    assert (pos.sum(axis=0) == 7).all() and (neg.sum(axis=0) == 13).all()
    assert np.array_equal(pos, big[0][0]) and np.array_equal(neg, big[0][1])
    assert not np.array_equal(pos[:, 0], pos[:, 1])


def test_vectorised_bootstrap_equals_scikit_learn_on_the_same_resamples():
    y, cand, ref = _two_models(120, 0.25, 8, tie_step=0.2)
    threshold = 0.6
    positive = y == 1
    statistic = PairedStatistic(positive, cand, ref, threshold)
    pos_counts, neg_counts = next(
        stratified_count_chunks(positive.sum(), (~positive).sum(), 8, 1, 8)
    )
    values, _ = statistic(pos_counts, neg_counts)
    pos_idx, neg_idx = np.flatnonzero(positive), np.flatnonzero(~positive)
    for b in range(8):
        idx = np.r_[
            np.repeat(pos_idx, pos_counts[:, b].astype(int)),
            np.repeat(neg_idx, neg_counts[:, b].astype(int)),
        ]
        yb, cb, rb = y[idx], cand[idx], ref[idx]
        fpr_budget = np.count_nonzero((rb >= threshold) & (yb == 0)) / (~positive).sum()
        for j, s in enumerate((cb, rb)):
            assert values[0, j, b] == pytest.approx(roc_auc_score(yb, s), abs=1e-12)
            assert values[1, j, b] == pytest.approx(average_precision_score(yb, s), abs=1e-12)
            fpr, tpr, _ = roc_curve(yb, s, drop_intermediate=False)
            assert values[2, j, b] == pytest.approx(tpr[fpr <= fpr_budget].max(), abs=1e-12)


# --- paired comparison -------------------------------------------------------------------------


def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate():
    # binormal SYNTHETIC models: negatives N(0, 1) for both, positives N(mu, 1), correlated;
    # true AUC = Phi(mu / sqrt 2); at a fixed reference threshold t both models have the same
    # specificity Phi(t), so the true matched sensitivities are 1 - Phi(t - mu).
    rng = np.random.default_rng(123)
    mu_c, mu_r, t_ref = 1.5, 1.2, 1.0
    true_auc = PHI(mu_c / math.sqrt(2)) - PHI(mu_r / math.sqrt(2))
    true_sens = PHI(mu_c - t_ref) - PHI(mu_r - t_ref)
    y = np.r_[np.ones(40), np.zeros(160)]
    covered = np.zeros(3)
    sims = 200
    for i in range(sims):
        z1 = rng.standard_normal(y.size)
        z2 = 0.6 * z1 + 0.8 * rng.standard_normal(y.size)
        r = compare_paired(y, mu_c * y + z2, mu_r * y + z1, reference_threshold=t_ref, seed=i)
        covered += [
            r.roc_auc.low <= true_auc <= r.roc_auc.high,
            r.sensitivity_at_specificity.low <= true_sens <= r.sensitivity_at_specificity.high,
            r.delong.low <= true_auc <= r.delong.high,
        ]
    rates = covered / sims
    assert ((0.90 <= rates) & (rates <= 0.99)).all(), rates


def test_identical_and_monotone_transformed_models_give_exactly_zero():
    y, _, ref = _two_models(400, 0.15, 2)
    for cand in (ref.copy(), np.exp(ref) * 3 + 1):  # same ranking of the tiles
        r = compare_paired(y, cand, ref, reference_threshold=0.8)
        for delta in r.deltas.values():
            assert delta.delta == 0 and delta.low == 0 and delta.high == 0
            assert delta.passes(0.0)
        assert r.passes()
    same = compare_paired(y, ref, ref, reference_threshold=0.8)
    assert same.candidate_point.fp == same.reference_point.fp
    assert same.candidate_point.specificity == same.target_specificity
    assert same.candidate_threshold <= ref[ref >= 0.8].min()
    assert same.candidate_point.tp >= same.reference_point.tp
    assert (same.delong.z, same.delong.p_value) == (0.0, 1.0)


def test_clearly_worse_candidate_has_intervals_below_zero():
    rng = np.random.default_rng(9)
    y, _, ref = _two_models(600, 0.15, 9)
    worse = 0.3 * y + rng.standard_normal(y.size)
    r = compare_paired(y, worse, ref, reference_threshold=1.0, tolerance=0.02)
    for delta in r.deltas.values():
        assert delta.high < 0
        assert not delta.passes(0.02)
    assert not r.passes()
    assert r.delong.p_value < 0.001 and r.delong.high < 0
    better = compare_paired(y, ref, worse, reference_threshold=0.5)
    assert better.passes(0.0)


def test_matched_operating_point_reads_the_candidate_at_the_reference_specificity():
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    ref = [0.9, 0.8, 0.4, 0.3, 0.7, 0.35, 0.2, 0.1]
    cand = [0.6, 0.55, 0.25, 0.1, 0.65, 0.2, 0.3, 0.05]
    r = compare_paired(y, cand, ref, reference_threshold=0.5, synthetic=True)
    # reference at 0.5: calls 0.9, 0.8 and the negative 0.7 -> specificity 3/4, sensitivity 1/2
    assert r.target_specificity == 0.75
    assert (r.reference_point.tp, r.reference_point.fp) == (2, 1)
    # read by the rule at specificity 3/4 the reference reaches 3/4 (threshold 0.4) ...
    assert r.sensitivity_at_specificity.reference == 0.75
    # ... and the candidate (negatives 0.65, 0.3, ...) needs threshold 0.55: sensitivity 1/2
    assert r.candidate_threshold == 0.55
    assert (r.candidate_point.tp, r.candidate_point.fp) == (2, 1)
    assert r.candidate_point.specificity == r.target_specificity
    assert r.sensitivity_at_specificity.candidate == 0.5
    assert r.sensitivity_at_specificity.delta == -0.25
    assert sensitivity_at_specificity(y, cand, r.target_specificity) == 0.5


@pytest.mark.parametrize("threshold", [-10.0, 10.0])
def test_reference_threshold_beyond_all_scores(threshold):
    y, cand, ref = _two_models(200, 0.2, 4)
    r = compare_paired(y, cand, ref, reference_threshold=threshold)
    everything = threshold < 0  # below all scores: all called positive, specificity 0
    assert r.target_specificity == (0.0 if everything else 1.0)
    assert r.candidate_point.specificity >= r.target_specificity
    delta = r.sensitivity_at_specificity
    if everything:
        assert delta.candidate == delta.reference == 1.0 and delta.delta == 0
    else:
        assert 0.0 <= delta.candidate <= 1.0 and math.isfinite(delta.low)


def test_one_positive_leaves_delong_undefined_but_reported():
    y = np.r_[1, np.zeros(30)]
    rng = np.random.default_rng(1)
    r = compare_paired(y, rng.random(31), rng.random(31), reference_threshold=0.5)
    assert r.to_dict()["delong"]["variance"] is None
    assert "z=undefined" in r.describe()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"candidate": np.zeros(9)}, r"candidate scores: 9 value\(s\) for 10 labelled tiles"),
        ({"reference": np.r_[np.ones(9), np.nan]}, r"reference scores: 1 non-finite .*index 9"),
        ({"candidate": np.r_[np.inf, np.ones(9)]}, r"candidate scores: 1 non-finite .*index 0"),
        ({"y_true": np.zeros(10)}, "no positive tile"),
        ({"y_true": np.r_[np.ones(5), [0, 0, 0, 0, 3]]}, r"not 0 or 1 \(first at index 9"),
        ({"reference_threshold": float("nan")}, "finite number"),
        ({"n_resamples": 200}, ">= 1000"),
        ({"tolerance": -0.1}, "tolerance must lie"),
        ({"candidate_ids": list("abcdefghij"), "reference_ids": list("abcdefghji")}, "index 8"),
        ({"candidate_ids": list("abcdefghij")}, "only one model"),
    ],
)
def test_bad_inputs_give_one_clear_error(kwargs, match):
    args = {
        "y_true": np.r_[np.ones(5), np.zeros(5)],
        "candidate": np.linspace(0, 1, 10),
        "reference": np.linspace(1, 0, 10),
        "reference_threshold": 0.5,
    }
    args.update(kwargs)
    with pytest.raises(StatsInputError, match=match) as info:
        compare_paired(
            args.pop("y_true"), args.pop("candidate"), args.pop("reference"),
            source="preds.parquet", **args,
        )  # fmt: skip
    assert isinstance(info.value, DataError) and isinstance(info.value, MammoError)
    message = str(info.value)
    assert "\n" not in message
    if not {"n_resamples", "tolerance"} & kwargs.keys():  # data problems name their source
        assert message.startswith("preds.parquet: ")


def test_same_seed_same_result_and_chunking_does_not_matter():
    y, cand, ref = _two_models(500, 0.14, 13, tie_step=0.1)
    a = compare_paired(y, cand, ref, reference_threshold=0.7, seed=5)
    b = compare_paired(y, cand, ref, reference_threshold=0.7, seed=5, chunk=17)
    c = compare_paired(y, cand, ref, reference_threshold=0.7, seed=6)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()
    assert a.roc_auc.delta == c.roc_auc.delta  # the point estimate does not depend on the seed


def test_json_form_is_strict_json_round_trips_and_fails_closed_on_none():
    y, cand, ref = _two_models(400, 0.15, 17)
    r = compare_paired(y, cand, ref, reference_threshold=0.8, synthetic=True, tolerance=0.02)
    data = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert data["n"] == 400 and data["positives"] == int(y.sum())
    assert data["n_resamples"] == 1000 and data["seed"] == 0 and data["synthetic"] is True
    assert "bootstrap" in data["method"]
    back = PairedComparison.from_dict(data)
    assert back.to_dict() == r.to_dict()
    text = r.describe()
    assert "SYNTHETIC" in text and "\u0394ROC AUC" in text and f"{int(y.sum())} pos" in text
    assert (
        "real data"
        in compare_paired(y, cand, ref, reference_threshold=0.8, synthetic=False).describe()
    )
    data["deltas"]["pr_auc"]["low"] = None  # e.g. an undefined interval read back
    broken = PairedComparison.from_dict(data)
    assert not broken.pr_auc.passes(1.0)
    assert not broken.passes(1.0)
    assert broken.checks(1.0)["roc_auc"]
    assert not r.passes(0.02, metrics=["no_such_metric"])
    with pytest.raises(StatsInputError, match="r.json: not a paired comparison"):
        PairedComparison.from_dict({"schema": "other"}, source="r.json")
    del data["delong"]
    with pytest.raises(StatsInputError, match="r.json: .*missing or malformed.*delong"):
        PairedComparison.from_dict(data, source="r.json")
