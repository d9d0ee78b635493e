"""The gate's pure logic (no MLflow store): thresholds, fail-closed rules, non-regression."""

from __future__ import annotations

import json
import math

import pytest

from mammo_pipeline.registry.gate import (
    ChampionInfo,
    GateDecision,
    evaluate_gate,
    metric_problem,
    threshold_check,
)

GOOD = {"test_precision": 0.45, "test_recall": 0.86, "test_roc_auc": 0.90}
DIGEST = "a" * 64


def decide(metrics, champion=None, digest=DIGEST, **kw):
    return evaluate_gate(
        metrics,
        min_precision=kw.get("min_precision", 0.30),
        min_recall=kw.get("min_recall", 0.80),
        tolerance=kw.get("tolerance", 0.02),
        test_manifest_sha256=digest,
        champion=champion,
        extra_failures=kw.get("extra_failures", ()),
    )


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
    assert check.op == ">="


def test_threshold_must_be_finite():
    check = threshold_check("x", "test_recall", 0.9, float("nan"))
    assert not check.passed and "not a finite number" in check.reason


@pytest.mark.parametrize(
    ("champ_metrics", "champ_digest", "passed", "reason"),
    [
        ({"test_precision": 0.46, "test_recall": 0.87, "test_roc_auc": 0.91}, DIGEST, True, ""),
        (
            {"test_precision": 0.45, "test_recall": 0.86, "test_roc_auc": 0.95},
            DIGEST,
            False,
            "test_roc_auc = 0.9000 is worse than champion v3",
        ),
        (GOOD, "b" * 64, False, "different test set"),
        (GOOD, None, False, "champion run has no test_manifest_sha256"),
        (
            {"test_precision": 0.4, "test_recall": 0.8},
            DIGEST,
            False,
            "champion v3: test_roc_auc is missing",
        ),
        ({**GOOD, "test_recall": float("nan")}, DIGEST, False, "champion v3: test_recall is NaN"),
    ],
)
def test_non_regression(champ_metrics, champ_digest, passed, reason):
    d = decide(GOOD, ChampionInfo("3", champ_metrics, champ_digest))
    assert d.passed is passed, d.reasons
    assert d.champion_version == "3"
    if reason:
        assert any(reason in r for r in d.reasons), d.reasons


def test_candidate_without_digest_fails_only_when_a_champion_exists():
    assert decide(GOOD, None, digest=None).passed
    d = decide(GOOD, ChampionInfo("1", GOOD, DIGEST), digest=None)
    assert not d.passed and "candidate run has no test_manifest_sha256" in d.reasons[0]


def test_every_check_is_listed_with_observed_and_threshold():
    d = decide(GOOD, ChampionInfo("2", GOOD, DIGEST))
    names = [c.name for c in d.checks]
    assert names == [
        "min_precision",
        "min_recall",
        "same_test_set",
        "not_worse_than_champion:test_precision",
        "not_worse_than_champion:test_recall",
        "not_worse_than_champion:test_roc_auc",
    ]
    recall = d.checks[1]
    assert (recall.observed, recall.threshold, recall.passed) == (0.86, 0.80, True)
    assert "PASS min_recall: observed 0.8600 >= 0.8000" == recall.describe()
    assert math.isclose(d.checks[-1].threshold, 0.88)


def test_extra_failures_and_exceptions_fail_closed():
    d = decide(GOOD, extra_failures=[("not_rejected", "rejected by bob: blurry")])
    assert not d.passed and d.reasons == ["rejected by bob: blurry"]

    class Exploding(dict):
        def get(self, key, default=None):
            raise RuntimeError("store hiccup")

    d = decide(Exploding())
    assert not d.passed and d.reasons == ["RuntimeError: store hiccup"]


def test_duplicate_reasons_are_merged_and_decision_round_trips_json():
    d = decide({**GOOD, "test_precision": float("nan")}, ChampionInfo("1", GOOD, DIGEST))
    assert d.reasons.count("test_precision is NaN") == 1
    back = GateDecision.from_dict(json.loads(json.dumps(d.to_dict(), allow_nan=False)))
    assert back.passed is False and math.isnan(back.checks[0].observed)
    assert [c.name for c in back.checks] == [c.name for c in d.checks]


def test_consistency_guard_rejects_a_forged_pass():
    d = decide({**GOOD, "test_recall": 0.1})
    forged = GateDecision.from_dict({**d.to_dict(), "passed": True, "reasons": []})
    assert not forged.is_consistent()
    empty = GateDecision(passed=True, checks=[], reasons=[], champion_version=None)
    assert not empty.is_consistent()
    assert decide(GOOD).is_consistent()


def test_metric_problem_accepts_ints():
    assert metric_problem("test_recall", 1) is None
