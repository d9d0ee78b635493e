"""The gate's pure logic (no MLflow store): evidence, recomputed metrics, thresholds with
Wilson intervals, paired non-regression against champion and baseline, fail-closed rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammo_pipeline.registry.decision import GateDecision, metric_problem, threshold_check
from mammo_pipeline.registry.evidence import Evidence
from mammo_pipeline.registry.gate import evaluate_gate
from mammo_pipeline.registry.policy import GatePolicy
from tests.evidence_helpers import evidence, fixed_labels

POLICY = GatePolicy(
    min_precision=0.30,
    min_recall=0.70,
    regression_tolerance=0.02,
    require_approval=False,
    gate_lower_bound=False,
    confidence=0.95,
    n_resamples=1000,
    seed=0,
)


def decide(candidate: Evidence, **kw) -> GateDecision:
    return evaluate_gate(candidate, policy=kw.pop("policy", POLICY), **kw)


@pytest.mark.parametrize(
    ("observed", "passed", "reason"),
    [
        (0.5, True, ""),
        (0.3, True, ""),  # exactly at the threshold
        (0.2999999, False, "below the threshold"),
        (float("nan"), False, "is NaN"),
        (float("inf"), False, "infinite"),  # MLflow's own validator would let inf through
        (None, False, "is missing"),
        ("0.5", False, "not a number"),
        (1.5, False, "outside [0, 1]"),
        (True, False, "not a number"),
    ],
)
def test_threshold_check(observed, passed, reason):
    check = threshold_check("min_precision", "test_precision", observed, 0.3)
    assert check.passed is passed
    assert reason in check.reason


def test_metric_problem_names_the_metric():
    assert metric_problem("test_recall", None) == "test_recall is missing"


def test_good_candidate_without_references_passes_with_intervals():
    d = decide(evidence("1"))
    assert d.passed, d.reasons
    assert d.is_consistent()
    stats = d.statistics
    assert stats["n"] == 600 and stats["positives"] == 90 and stats["synthetic"] is True
    assert stats["recall"]["low"] < stats["recall"]["point"] < stats["recall"]["high"]
    assert {c.name for c in d.checks} >= {
        "evidence_intact", "logged_metrics_match_predictions", "min_precision", "min_recall"
    }  # fmt: skip
    json.dumps(d.to_dict(), allow_nan=False)
    assert GateDecision.from_dict(json.loads(json.dumps(d.to_dict()))).is_consistent()


def test_threshold_failure_quotes_the_interval():
    d = decide(evidence("1", signal=0.5))
    assert not d.passed
    assert any("test_recall" in r and "[" in r and "(n=90)" in r for r in d.reasons), d.reasons


def test_lower_bound_policy_is_stricter_than_the_point_estimate():
    cand = evidence("1")
    point = cand.predictions.scores >= 0.5  # type: ignore[union-attr]
    recall = point[cand.predictions.positive == 1].mean()  # type: ignore[union-attr]
    policy = GatePolicy(**{**POLICY.to_dict(), "min_recall": float(recall) - 0.01})
    assert decide(cand, policy=policy).passed
    strict = GatePolicy(**{**policy.to_dict(), "gate_lower_bound": True})
    d = decide(cand, policy=strict)
    assert not d.passed and any("lower bound used" in r for r in d.reasons), d.reasons


def test_relogged_metric_disagrees_with_the_predictions():
    d = decide(evidence("1", signal=0.8, metrics={"test_precision": 0.95, "test_recall": 0.95}))
    assert not d.passed
    assert any("disagrees" in r and "re-logged" in r for r in d.reasons), d.reasons


def test_missing_evidence_fails_closed():
    bare = Evidence(version="3", problem="v3: run r has no per-tile test predictions")
    d = decide(bare)
    assert not d.passed and d.reasons == ["v3: run r has no per-tile test predictions"]


def test_identical_model_passes_against_champion_with_zero_delta():
    d = decide(evidence("2"), champion=evidence("1"))
    assert d.passed, d.reasons
    vs = d.statistics["vs_champion"]
    assert vs["version"] == "1" and vs["deltas"]["roc_auc"]["delta"] == 0.0
    assert d.champion_version == "1" and d.is_consistent()


def test_clearly_worse_candidate_is_refused_at_matched_operating_point():
    d = decide(evidence("2", signal=1.5), champion=evidence("1", signal=3.0))
    assert not d.passed
    failed = {c.name for c in d.checks if not c.passed}
    assert "not_worse_than_champion:roc_auc" in failed
    assert "not_worse_than_champion:sensitivity_at_specificity" in failed
    assert any("could be worse than champion v1" in r for r in d.reasons)


def test_baseline_bounds_the_cumulative_loss():
    """Each step is within the tolerance of the champion, but not of the baseline."""
    d = decide(
        evidence("3", signal=2.6),
        champion=evidence("2", signal=2.8),
        baseline=evidence("1", signal=3.2),
    )
    champ = {c.name: c.passed for c in d.checks if "champion" in c.name}
    base = {c.name: c.passed for c in d.checks if "baseline" in c.name}
    assert champ and base and d.baseline_version == "1"
    assert not d.passed and not all(base.values()), d.reasons


def test_other_test_set_is_not_comparable():
    d = decide(evidence("2"), champion=evidence("1", digest="e" * 64))
    assert not d.passed and any("different test set" in r for r in d.reasons)
    shuffled = fixed_labels()[::-1].copy()
    d = decide(evidence("2"), champion=evidence("1", labels=shuffled))
    assert not d.passed and any("not on the same tiles" in r for r in d.reasons)


def test_unusable_champion_evidence_fails_closed():
    old = Evidence(version="1", problem="v1: run r has no per-tile test predictions")
    d = decide(evidence("2"), champion=old)
    assert not d.passed and any("champion v1" in r and "cannot compare" in r for r in d.reasons)


def test_tampered_decisions_are_not_consistent():
    d = decide(evidence("2"), champion=evidence("1"))
    data = d.to_dict()
    data["checks"] = [c for c in data["checks"] if "champion" not in c["name"]]
    assert not GateDecision.from_dict(data).is_consistent()
    forged = {**decide(evidence("2", signal=0.5)).to_dict(), "passed": True, "reasons": []}
    assert not GateDecision.from_dict(forged).is_consistent()


def test_extra_failures_fail_the_gate():
    d = decide(evidence("1"), extra_failures=[("not_rejected", "rejected by dora: no")])
    assert not d.passed and d.reasons == ["rejected by dora: no"]


def test_comparison_records_the_test_size():
    labels = np.zeros(2000, dtype=np.int64)
    labels[:280] = 1
    d = decide(evidence("2", labels=labels), champion=evidence("1", labels=labels))
    assert d.statistics["vs_champion"]["n"] == 2000
