"""The promotion gate as pure logic: evidence in, a :class:`GateDecision` out.

No MLflow store is touched here (:mod:`.promotion` reads the evidence and applies the
decision). Every rule fails closed, and every number a rule decides on comes from the
per-tile test predictions of the runs (:mod:`.evidence`), not from metrics that can be
re-logged:

1. **evidence_intact**: the candidate's predictions artifact exists, matches the digest
   recorded at evaluation and holds a finite score for every test tile; on the gate's path
   (:func:`.promotion.gate_version`) also: the signed evaluation vouches for exactly these
   digests, and the registered model re-scores a random subset of the held-out tiles to
   the logged scores (:mod:`.attestation`, :mod:`.rescore`, kept in ``statistics.evidence``);
2. **logged_metrics_match_predictions**: precision, recall and ROC AUC recomputed from the
   predictions at the run's decision threshold equal the metrics logged on the run (a metric
   re-logged by hand fails here);
3. **min_precision / min_recall**: the point estimate (or, with ``gate_lower_bound``, the
   lower bound of the Wilson interval) at the decision threshold must reach the threshold;
   the interval, the number of tiles and of positives are recorded either way;
4. **non-regression, paired, at matched operating points**, against the ``champion`` and
   against the ``baseline`` (a champion not worse than the previous baseline on any metric,
   or one a person pinned, :mod:`.baseline`): both models' scores on the *same* test
   tiles; ΔROC AUC, ΔPR AUC and Δsensitivity at the reference's specificity with a paired
   stratified bootstrap interval
   (:func:`mammo_pipeline.stats.compare_paired`); each passes only when the interval's lower
   bound is ``>= -regression_tolerance``. Comparing with the baseline as well bounds the
   cumulative loss over any number of promotions (no walk-down, one tolerance at a time).
   Different test sets (manifest digest, tile ids or labels) are not comparable: a fail.
5. **film non-regression** (what ``/analyze`` serves): when both versions were evaluated on
   the same film set (``film_set_sha256``), Δfilm ROC AUC and ΔFROC sensitivity at 1 false
   positive per image on its test films, paired bootstrap over films stratified by label
   (:func:`mammo_pipeline.stats.film.compare_films`), with the same rule (lower bound
   ``>= -regression_tolerance``). Different or missing film sets: not compared (recorded in
   the statistics), the tile rules still apply.

Absolute threshold checks are made twice, once by our rule and once by MLflow's
``validate_evaluation_results``; a check passes only when both agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mammo_pipeline.registry.decision import (  # noqa: F401 - re-exported names
    CHECK_EVIDENCE,
    CHECK_METRICS_MATCH,
    CHECK_MIN_PRECISION,
    CHECK_MIN_RECALL,
    CHECK_SAME_FILM_SET,
    CHECK_SAME_TEST_SET,
    FILM_REGRESSION_METRICS,
    REGRESSION_METRICS,
    REQUIRED_CHECKS,
    RUN_TAGS_COPIED,
    TEST_METRICS,
    UNIT_INTERVAL_METRICS,
    Check,
    GateDecision,
    fmt_value,
    metric_problem,
    regression_check_name,
    threshold_check,
    utc_now,
)
from mammo_pipeline.registry.evidence import Evidence
from mammo_pipeline.registry.policy import GatePolicy

#: Largest difference between a logged metric and the same metric recomputed from the
#: predictions (float round-off of two implementations, far below any real change).
METRIC_MATCH_TOLERANCE = 1e-6
#: Logged metrics the gate recomputes from the predictions.
RECOMPUTED_METRICS = ("test_precision", "test_recall", "test_roc_auc")


def _short(digest: str | None) -> str | None:
    return digest[:12] if digest else None


def recomputed_metrics(evidence: Evidence) -> dict[str, float]:
    """Precision, recall and ROC AUC of the evidence's predictions at its threshold."""
    from mammo_pipeline.stats import operating_point, roc_auc

    assert evidence.predictions is not None and evidence.threshold is not None
    y = evidence.predictions.positive
    point = operating_point(y, evidence.predictions.scores, evidence.threshold)
    precision = point.precision if math.isfinite(point.precision) else 0.0  # sklearn's rule
    return {
        "test_precision": float(precision),
        "test_recall": float(point.sensitivity),
        "test_roc_auc": float(roc_auc(y, evidence.predictions.scores)),
    }


def _metrics_match(evidence: Evidence) -> Check:
    recomputed = recomputed_metrics(evidence)
    for metric, value in recomputed.items():
        logged = evidence.metrics.get(metric)
        if metric_problem(metric, logged) is not None or not math.isfinite(value):
            return Check(CHECK_METRICS_MATCH, logged, value, "==", False,
                         f"{metric}: logged {fmt_value(logged)}, recomputed {fmt_value(value)}",
                         metric)  # fmt: skip
        if abs(float(logged) - value) > METRIC_MATCH_TOLERANCE:
            return Check(
                CHECK_METRICS_MATCH, float(logged), value, "==", False,
                f"logged {metric} = {fmt_value(logged)} disagrees with {fmt_value(value)} "
                "recomputed from the run's per-tile predictions: metrics were re-logged or "
                "the evidence does not belong to this run", metric,
            )  # fmt: skip
    return Check(CHECK_METRICS_MATCH, "agree", "agree", "==", True)


def _absolute(evidence: Evidence, policy: GatePolicy, stats: dict[str, Any]) -> list[Check]:
    from mammo_pipeline.stats import operating_point

    assert evidence.predictions is not None and evidence.threshold is not None
    point = operating_point(
        evidence.predictions.positive, evidence.predictions.scores, evidence.threshold
    )
    intervals = point.intervals(policy.confidence)
    stats["operating_point"] = point.to_dict()
    stats["precision"] = intervals["precision"].to_dict()
    stats["recall"] = intervals["sensitivity"].to_dict()
    checks = []
    for name, metric, key, minimum in (
        (CHECK_MIN_PRECISION, "test_precision", "precision", policy.min_precision),
        (CHECK_MIN_RECALL, "test_recall", "sensitivity", policy.min_recall),
    ):
        interval = intervals[key]
        value = interval.low if policy.gate_lower_bound else interval.point
        what = "lower bound" if policy.gate_lower_bound else "point estimate"
        text = f"{metric} {interval.describe()} ({what} used)"
        check = threshold_check(
            name, metric, float(value) if math.isfinite(value) else float("nan"), minimum,
            below_reason=f"{text} is below the threshold {minimum:g}",
        )  # fmt: skip
        if check.passed:
            check = Check(check.name, check.observed, check.threshold, check.op, True, text,
                          metric)  # fmt: skip
        checks.append(check)
    return checks


def _same_tiles(candidate: Evidence, reference: Evidence) -> str | None:
    """Why the two cannot be compared tile by tile (None when they can)."""
    if not candidate.test_manifest_sha256 or not reference.test_manifest_sha256:
        return "a run has no test_manifest_sha256: cannot tell whether the test sets are equal"
    if candidate.test_manifest_sha256 != reference.test_manifest_sha256:
        return (
            f"evaluated on a different test set (test_manifest_sha256 "
            f"{_short(reference.test_manifest_sha256)} != "
            f"{_short(candidate.test_manifest_sha256)}): not comparable"
        )
    a, b = candidate.predictions, reference.predictions
    assert a is not None and b is not None
    if a.tile_ids != b.tile_ids or not np.array_equal(a.labels, b.labels):
        return "the per-tile predictions are not on the same tiles in the same order"
    return None


def _non_regression(
    role: str,
    candidate: Evidence,
    reference: Evidence,
    policy: GatePolicy,
    stats: dict[str, Any],
) -> list[Check]:
    from mammo_pipeline.stats import compare_paired

    names = [regression_check_name(role, m) for m in REGRESSION_METRICS]
    ref = f"{role} v{reference.version}"
    if not reference.usable:
        reason = f"{ref}: {reference.problem or 'no usable evidence'}; cannot compare"
        return [Check(n, None, None, ">=", False, reason, m)
                for n, m in zip(names, REGRESSION_METRICS, strict=True)]  # fmt: skip
    problem = _same_tiles(candidate, reference)
    if problem is not None:
        return [
            Check(CHECK_SAME_TEST_SET + f":{role}", None, None, "==", False, f"{ref}: {problem}")
        ]
    assert candidate.predictions is not None and reference.predictions is not None
    assert reference.threshold is not None
    comparison = compare_paired(
        candidate.predictions.positive,
        candidate.predictions.scores,
        reference.predictions.scores,
        reference_threshold=reference.threshold,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
        tolerance=policy.regression_tolerance,
        candidate_ids=candidate.predictions.tile_ids,
        reference_ids=reference.predictions.tile_ids,
        synthetic=candidate.synthetic,
        source=f"v{candidate.version} vs {ref}",
    )
    stats[f"vs_{role}"] = {"version": reference.version, **comparison.to_dict()}
    checks = [Check(CHECK_SAME_TEST_SET + f":{role}", "same tiles", "same tiles", "==", True)]
    deltas = [(n, m, getattr(comparison, m)) for n, m in zip(names, REGRESSION_METRICS,
                                                             strict=True)]  # fmt: skip
    films = _film_deltas(role, candidate, reference, policy, stats)
    if isinstance(films, Check):
        checks.append(films)
    else:
        deltas += films
    for name, metric, delta in deltas:
        text = f"vs {ref}: {delta.describe()}"
        low = delta.low
        if delta.passes(policy.regression_tolerance):
            checks.append(Check(name, low, -policy.regression_tolerance, ">=", True, text, metric))
        else:
            reason = (
                f"{text}: the lower bound {fmt_value(low)} is below -tolerance "
                f"{-policy.regression_tolerance:g} (could be worse than {ref} by more than "
                "the tolerance)"
            )
            observed = low if math.isfinite(low) else None
            checks.append(Check(name, observed, -policy.regression_tolerance, ">=", False,
                                reason, metric))  # fmt: skip
    return checks


def _film_deltas(
    role: str, candidate: Evidence, reference: Evidence, policy: GatePolicy, stats: dict
) -> list[tuple[str, str, Any]] | Check:
    """(check name, metric, PairedDelta) of the film metrics, when the two were evaluated on
    the same film set. A reference judged on no films (a version from before film-level
    evaluation) is skipped, the reason kept in ``stats``. A reference judged on films fails
    closed when the candidate has no film evidence or was evaluated on another film set:
    what ``/analyze`` serves could otherwise get worse unseen (the returned :class:`Check`)."""
    from mammo_pipeline.stats.film import compare_films

    a, b = candidate.film_predictions, reference.film_predictions
    key = f"films_vs_{role}"
    ref = f"{role} v{reference.version}"
    if b is None:
        stats[f"{key}_skipped"] = f"no film predictions for the {ref}: films not compared"
        return []
    name = f"{CHECK_SAME_FILM_SET}:{role}"
    if a is None:
        return Check(name, None, None, "==", False,
                     f"{ref} was judged on films and this version has no film evidence: "
                     "evaluate it on the film set")  # fmt: skip
    if not candidate.film_set_sha256 or candidate.film_set_sha256 != reference.film_set_sha256:
        return Check(name, None, None, "==", False,
                     f"{ref}: evaluated on a different film set (film_set_sha256 "
                     f"{_short(reference.film_set_sha256)} != "
                     f"{_short(candidate.film_set_sha256)}): not comparable")  # fmt: skip
    comparison = compare_films(
        a.candidates("test"),
        b.candidates("test"),
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
        synthetic=candidate.synthetic,
        source=f"v{candidate.version} vs {role} v{reference.version} (films)",
    )
    stats[key] = {"version": reference.version, "film_set_sha256": candidate.film_set_sha256,
                  **comparison.to_dict()}  # fmt: skip
    return [
        (regression_check_name(role, m), m, comparison.deltas[m]) for m in FILM_REGRESSION_METRICS
    ]


def _film_summary(candidate: Evidence) -> dict[str, Any]:
    from mammo_pipeline.stats.film import summarize

    assert candidate.film_predictions is not None
    summary = summarize(candidate.film_predictions.candidates("test")).to_dict()
    return {**summary, "film_set_sha256": candidate.film_set_sha256}


def evaluate_gate(
    candidate: Evidence,
    *,
    policy: GatePolicy,
    champion: Evidence | None = None,
    baseline: Evidence | None = None,
    extra_failures: Sequence[tuple[str, str]] = (),
    model_name: str | None = None,
) -> GateDecision:
    """Decide on ``candidate``. ``extra_failures`` are (check name, reason) pairs found by
    the caller (a run that did not finish, a reviewer's rejection, a lookup error)."""
    checks: list[Check] = []
    stats: dict[str, Any] = {}
    try:
        if not candidate.usable:
            checks.append(Check(CHECK_EVIDENCE, None, None, "", False,
                                candidate.problem or "no usable evidence"))  # fmt: skip
        else:
            assert candidate.predictions is not None
            stats["n"] = len(candidate.predictions)
            stats["positives"] = int(candidate.predictions.positive.sum())
            stats["synthetic"] = candidate.synthetic
            if candidate.attested:  # checked by the gate itself (signature, re-scoring)
                stats["evidence"] = candidate.attested
            checks.append(Check(CHECK_EVIDENCE, _short(candidate.predictions_sha256),
                                "recorded digest", "==", True,
                                (candidate.attested or {}).get("summary", "")))  # fmt: skip
            checks.append(_metrics_match(candidate))
            checks.extend(_absolute(candidate, policy, stats))
            if candidate.film_predictions is not None:
                stats["films"] = _film_summary(candidate)
            seen = {candidate.version}
            for role, reference in (("champion", champion), ("baseline", baseline)):
                if reference is None or reference.version in seen:
                    continue
                seen.add(reference.version)
                checks.extend(_non_regression(role, candidate, reference, policy, stats))
    except Exception as exc:  # fail closed on anything unforeseen
        checks.append(Check("gate_error", None, None, "", False, f"{type(exc).__name__}: {exc}"))
    for name, reason in extra_failures:
        checks.append(Check(name, None, None, "", False, reason))
    reasons = list(dict.fromkeys(c.reason or f"{c.name} failed" for c in checks if not c.passed))
    return GateDecision(
        passed=bool(checks) and not reasons,
        checks=checks,
        reasons=reasons,
        champion_version=champion.version
        if champion and champion.version != candidate.version
        else None,
        version=candidate.version,
        model_name=model_name,
        run_id=candidate.run_id,
        min_precision=policy.min_precision,
        min_recall=policy.min_recall,
        tolerance=policy.regression_tolerance,
        test_manifest_sha256=candidate.test_manifest_sha256,
        baseline_version=baseline.version
        if baseline is not None and baseline.version != candidate.version
        else None,
        policy=policy.to_dict(),
        statistics=stats,
    )
