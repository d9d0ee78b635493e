"""The gate's record: one :class:`Check` per rule and the :class:`GateDecision` they add up
to, JSON-serialisable (Airflow XCom, version tags, the review report), plus the metric and
threshold helpers the checks share. The rules themselves are in :mod:`.gate`."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mammo_pipeline.common.jsonsafe import clean, from_json_number, to_json_number

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
    "airflow_dag_id",
    "weights_source",
    "synthetic",
)
#: Paired non-regression metrics (candidate - reference on the same tiles, see
#: :func:`mammo_pipeline.stats.compare_paired`): must not be worse beyond the tolerance.
REGRESSION_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "sensitivity_at_specificity")
#: Film-level paired non-regression metrics (what /analyze serves; see
#: :func:`mammo_pipeline.stats.film.compare_films`), checked when both versions were evaluated
#: on the same film set.
FILM_REGRESSION_METRICS: tuple[str, ...] = ("film_roc_auc", "film_froc_sens_at_1fp")
#: References every candidate is compared with (when they exist and are not the candidate).
REFERENCES: tuple[str, ...] = ("champion", "baseline")
#: Metrics that must lie in [0, 1]: a value outside is a broken run, never a pass.
UNIT_INTERVAL_METRICS: frozenset[str] = frozenset(TEST_METRICS)

#: Names of the two absolute checks; a decision without both is not a valid pass.
CHECK_MIN_PRECISION = "min_precision"
CHECK_MIN_RECALL = "min_recall"
CHECK_SAME_TEST_SET = "same_test_set"
CHECK_SAME_FILM_SET = "same_film_set"
CHECK_EVIDENCE = "evidence_intact"
CHECK_METRICS_MATCH = "logged_metrics_match_predictions"
REQUIRED_CHECKS: frozenset[str] = frozenset(
    {CHECK_MIN_PRECISION, CHECK_MIN_RECALL, CHECK_EVIDENCE, CHECK_METRICS_MATCH}
)


def regression_check_name(reference: str, metric: str) -> str:
    return f"not_worse_than_{reference}:{metric}"


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
    baseline_version: str | None = None
    policy: dict[str, Any] | None = None
    statistics: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    def is_consistent(self) -> bool:
        """True only if ``passed`` is backed by the checks: every check passed, the evidence
        and both absolute thresholds were checked, and every reference named was compared on
        every regression metric. A hand-made or tampered decision is not."""
        if not self.passed:
            return True
        names = {c.name for c in self.checks}
        required = set(REQUIRED_CHECKS)
        for role, version in (
            ("champion", self.champion_version),
            ("baseline", self.baseline_version),
        ):
            if version is not None and not (
                role == "baseline" and version == self.champion_version
            ):  # a baseline that is the champion is compared once, as the champion
                required |= {regression_check_name(role, m) for m in REGRESSION_METRICS}
                if (self.statistics or {}).get(f"films_vs_{role}"):  # compared on films too
                    required |= {regression_check_name(role, m) for m in FILM_REGRESSION_METRICS}
        return (
            bool(self.checks)
            and all(c.passed for c in self.checks)
            and required <= names
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
            "baseline_version": self.baseline_version,
            "policy": self.policy,
            "statistics": clean(self.statistics, non_finite="none"),
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
            baseline_version=(
                None if d.get("baseline_version") is None else str(d["baseline_version"])
            ),
            policy=d.get("policy"),
            statistics=d.get("statistics"),
        )


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
