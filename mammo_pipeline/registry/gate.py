"""The promotion gate as pure logic: metrics in, a :class:`GateDecision` out.

No MLflow store is touched here (``mammo_pipeline.registry`` reads the runs and applies the
decision). Every comparison is made twice, once by our own rule and once by MLflow's
``mlflow.validate_evaluation_results`` with :class:`mlflow.models.MetricThreshold`; a check
passes only when both agree that it passes. The rules, all failing closed:

* absolute thresholds: ``observed >= threshold`` (passes exactly at the threshold, no epsilon);
* a metric that is missing, not a number, NaN, infinite or outside ``[0, 1]`` fails;
* non-regression against the champion: ``candidate >= champion - tolerance`` for each of
  :data:`REGRESSION_METRICS`, only when both runs carry the same test-set manifest digest; a
  missing or different digest fails with that reason, and so does a champion metric that is
  missing or not finite;
* any exception while checking becomes a failed check carrying the exception text.

MLflow's validator alone would not be enough: it lets ``inf`` through, raises on ``None`` and
``Decimal`` comparisons of NaN, and reports all failures as one message; hence the double check.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mammo_pipeline.common.jsonsafe import from_json_number, to_json_number

#: Test-set metrics of a training run that are copied onto every model version as tags.
TEST_METRICS: tuple[str, ...] = (
    "test_precision",
    "test_recall",
    "test_f1",
    "test_accuracy",
    "test_specificity",
    "test_roc_auc",
    "test_pr_auc",
)
#: Provenance tags of a training run, copied onto its model version and shown to reviewers.
RUN_TAGS_COPIED: tuple[str, ...] = (
    "data_manifest_sha256",
    "test_manifest_sha256",
    "git_commit",
    "airflow_run_id",
    "weights_source",
    "synthetic",
)
#: Metrics on which a candidate must not be worse than the champion (beyond the tolerance).
REGRESSION_METRICS: tuple[str, ...] = ("test_precision", "test_recall", "test_roc_auc")
#: Metrics that must lie in [0, 1]: a value outside is a broken run, never a pass.
UNIT_INTERVAL_METRICS: frozenset[str] = frozenset(TEST_METRICS)

#: Names of the two absolute checks; a decision without both is not a valid pass.
CHECK_MIN_PRECISION = "min_precision"
CHECK_MIN_RECALL = "min_recall"
CHECK_SAME_TEST_SET = "same_test_set"
REQUIRED_CHECKS: frozenset[str] = frozenset({CHECK_MIN_PRECISION, CHECK_MIN_RECALL})


@dataclass(frozen=True)
class Check:
    """One line of the gate: what was compared, with what, and the verdict."""

    name: str
    observed: float | str | None
    threshold: float | str | None
    op: str
    passed: bool
    reason: str = ""
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["observed"] = to_json_number(self.observed)
        d["threshold"] = to_json_number(self.threshold)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        return cls(
            name=str(d["name"]),
            observed=from_json_number(d.get("observed")),
            threshold=from_json_number(d.get("threshold")),
            op=str(d.get("op", "")),
            passed=bool(d.get("passed", False)),
            reason=str(d.get("reason", "")),
            metric=d.get("metric"),
        )

    def describe(self) -> str:
        """``PASS test_precision >= 0.3: observed 0.41`` style one-liner."""
        verdict = "PASS" if self.passed else "FAIL"
        text = f"{verdict} {self.name}: observed {fmt_value(self.observed)} {self.op} "
        text += f"{fmt_value(self.threshold)}"
        return text + (f" ({self.reason})" if self.reason and not self.passed else "")


@dataclass(frozen=True)
class GateDecision:
    """The verdict on one model version; JSON-serialisable through :meth:`to_dict`."""

    passed: bool
    checks: list[Check]
    reasons: list[str]
    champion_version: str | None
    version: str | None = None
    model_name: str | None = None
    run_id: str | None = None
    min_precision: float | None = None
    min_recall: float | None = None
    tolerance: float | None = None
    test_manifest_sha256: str | None = None
    evaluated_at: str = field(default_factory=lambda: utc_now())

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def is_consistent(self) -> bool:
        """True only if ``passed`` is backed by the checks: every check passed and both
        absolute thresholds were checked. A hand-made or tampered decision is not."""
        if not self.passed:
            return True
        names = {c.name for c in self.checks}
        return (
            bool(self.checks)
            and all(c.passed for c in self.checks)
            and (REQUIRED_CHECKS <= names)
            and not self.reasons
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self.verdict,
            "checks": [c.to_dict() for c in self.checks],
            "reasons": list(self.reasons),
            "champion_version": self.champion_version,
            "version": self.version,
            "model_name": self.model_name,
            "run_id": self.run_id,
            "min_precision": self.min_precision,
            "min_recall": self.min_recall,
            "tolerance": self.tolerance,
            "test_manifest_sha256": self.test_manifest_sha256,
            "evaluated_at": self.evaluated_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateDecision:
        return cls(
            passed=bool(d["passed"]),
            checks=[Check.from_dict(c) for c in d.get("checks", [])],
            reasons=[str(r) for r in d.get("reasons", [])],
            champion_version=(
                None if d.get("champion_version") is None else str(d["champion_version"])
            ),
            version=None if d.get("version") is None else str(d["version"]),
            model_name=d.get("model_name"),
            run_id=d.get("run_id"),
            min_precision=d.get("min_precision"),
            min_recall=d.get("min_recall"),
            tolerance=d.get("tolerance"),
            test_manifest_sha256=d.get("test_manifest_sha256"),
            evaluated_at=str(d.get("evaluated_at") or utc_now()),
        )


@dataclass(frozen=True)
class ChampionInfo:
    """What the gate needs to know about the current champion."""

    version: str
    metrics: Mapping[str, Any]
    test_manifest_sha256: str | None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fmt_value(value: Any) -> str:
    """A metric value for people: 4 decimals for floats, short digests, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        f = float(value)
        return str(f) if not math.isfinite(f) else f"{f:.4f}"
    return str(value)


def metric_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be used as metric ``name`` (None when it can)."""
    if value is None:
        return f"{name} is missing"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} is not a number ({value!r})"
    f = float(value)
    if math.isnan(f):
        return f"{name} is NaN"
    if math.isinf(f):
        return f"{name} is infinite ({f})"
    if name in UNIT_INTERVAL_METRICS and not 0.0 <= f <= 1.0:
        return f"{name} = {f} is outside [0, 1]"
    return None


def _mlflow_agrees(metric: str, observed: float, threshold: float) -> tuple[bool, str]:
    """Run MLflow's own validator on one ``observed >= threshold`` comparison."""
    from mlflow import validate_evaluation_results
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult

    chatty = logging.getLogger("mlflow.models.evaluation.validation")  # INFO per call
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        validate_evaluation_results(
            {metric: MetricThreshold(threshold=float(threshold), greater_is_better=True)},
            EvaluationResult(metrics={metric: float(observed)}, artifacts={}),
        )
    except Exception as exc:  # ModelValidationFailedException or anything unexpected
        return False, str(exc).strip()
    finally:
        chatty.setLevel(level)
    return True, ""


def threshold_check(
    name: str,
    metric: str,
    observed: Any,
    threshold: Any,
    *,
    what: str = "threshold",
    below_reason: str | None = None,
) -> Check:
    """``observed >= threshold`` with missing / NaN / inf / out-of-range failing closed."""
    problem = metric_problem(metric, observed)
    if problem is None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(float(threshold))
    ):
        problem = f"{what} for {metric} is not a finite number ({threshold!r})"
    if problem is not None:
        return Check(name, observed, threshold, ">=", False, problem, metric)
    ours = float(observed) >= float(threshold)
    theirs, message = _mlflow_agrees(metric, float(observed), float(threshold))
    if ours and theirs:
        return Check(name, float(observed), float(threshold), ">=", True, "", metric)
    if ours != theirs:
        reason = f"{metric}: own rule says {ours}, MLflow validation says {theirs} {message}"
    else:
        reason = below_reason or (
            f"{metric} = {fmt_value(observed)} is below the {what} {fmt_value(threshold)}"
        )
    return Check(name, float(observed), float(threshold), ">=", False, reason.strip(), metric)


def evaluate_gate(
    metrics: Mapping[str, Any],
    *,
    min_precision: float,
    min_recall: float,
    tolerance: float,
    test_manifest_sha256: str | None,
    champion: ChampionInfo | None,
    extra_failures: Sequence[tuple[str, str]] = (),
    version: str | None = None,
    model_name: str | None = None,
    run_id: str | None = None,
) -> GateDecision:
    """Decide on a candidate. ``extra_failures`` are (check name, reason) pairs found by the
    caller (a run that did not finish, a reviewer's rejection, a lookup error)."""
    checks: list[Check] = []
    try:
        checks.append(
            threshold_check(
                CHECK_MIN_PRECISION, "test_precision", metrics.get("test_precision"), min_precision
            )
        )
        checks.append(
            threshold_check(CHECK_MIN_RECALL, "test_recall", metrics.get("test_recall"), min_recall)
        )
        if champion is not None:
            checks.extend(_non_regression(metrics, test_manifest_sha256, champion, tolerance))
    except Exception as exc:  # fail closed on anything unforeseen
        checks.append(Check("gate_error", None, None, "", False, f"{type(exc).__name__}: {exc}"))
    for name, reason in extra_failures:
        checks.append(Check(name, None, None, "", False, reason))
    reasons = list(dict.fromkeys(c.reason or f"{c.name} failed" for c in checks if not c.passed))
    return GateDecision(
        passed=bool(checks) and not reasons,
        checks=checks,
        reasons=reasons,
        champion_version=champion.version if champion else None,
        version=version,
        model_name=model_name,
        run_id=run_id,
        min_precision=min_precision,
        min_recall=min_recall,
        tolerance=tolerance,
        test_manifest_sha256=test_manifest_sha256,
    )


def _short(digest: str | None) -> str | None:
    return digest[:12] if digest else None


def _non_regression(
    metrics: Mapping[str, Any],
    digest: str | None,
    champion: ChampionInfo,
    tolerance: float,
) -> list[Check]:
    ours, theirs = digest, champion.test_manifest_sha256
    if not ours or not theirs:
        missing = "candidate" if not ours else "champion"
        reason = (
            f"{missing} run has no test_manifest_sha256: cannot tell whether champion "
            f"v{champion.version} was evaluated on the same test set"
        )
        return [Check(CHECK_SAME_TEST_SET, _short(ours), _short(theirs), "==", False, reason)]
    if ours != theirs:
        reason = (
            f"champion v{champion.version} was evaluated on a different test set "
            f"(test_manifest_sha256 {_short(theirs)} != {_short(ours)}): not comparable"
        )
        return [Check(CHECK_SAME_TEST_SET, _short(ours), _short(theirs), "==", False, reason)]
    checks = [Check(CHECK_SAME_TEST_SET, _short(ours), _short(theirs), "==", True)]
    for metric in REGRESSION_METRICS:
        name = f"not_worse_than_champion:{metric}"
        champ_value = champion.metrics.get(metric)
        problem = metric_problem(metric, champ_value)
        if problem is not None:
            checks.append(
                Check(
                    name,
                    metrics.get(metric),
                    None,
                    ">=",
                    False,
                    f"champion v{champion.version}: {problem}; cannot compare",
                    metric,
                )
            )
            continue
        floor = float(champ_value) - tolerance
        below = (
            f"{metric} = {fmt_value(metrics.get(metric))} is worse than champion "
            f"v{champion.version} ({fmt_value(champ_value)}) by more than the tolerance "
            f"{tolerance}"
        )
        check = threshold_check(
            name,
            metric,
            metrics.get(metric),
            floor,
            what=f"champion v{champion.version} - tolerance",
            below_reason=below,
        )
        checks.append(check)
    return checks
