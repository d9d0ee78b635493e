"""The MLflow model registry of mammo-mlops: register, gate, promote, and human review.

Everything goes through :class:`mlflow.MlflowClient` on the configured tracking URI (SQLite or a
remote server); nothing here uses stages, only aliases (DESIGN.md section 4):

* ``champion``: the served version; ``previous``: the champion it replaced (rollback target);
  ``challenger``: the last candidate that did not pass (or that passed but waits for a
  reviewer when ``require_approval`` is set).
* Tags on every version: ``gate`` (``pending`` until gated, then ``passed`` / ``failed`` /
  ``manual``), ``gate_reasons``, the test metrics, ``decision_threshold``,
  ``data_manifest_sha256``, ``test_manifest_sha256``, ``git_commit``, ``airflow_run_id`` (when
  known), plus the gate's parameters and the reviewer's ``review*`` tags.
* Tags are always written before any alias moves.

Functions return small dataclasses with ``to_dict()`` (JSON-serialisable, for Airflow XCom).
Usage errors (unknown version, nothing to roll back, ...) raise :class:`MammoError`;
:func:`gate_version` never raises for problems in the data it checks: they fail the gate.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.gate import (
    RUN_TAGS_COPIED,
    TEST_METRICS,
    ChampionInfo,
    GateDecision,
    evaluate_gate,
    utc_now,
)
from mammo_pipeline.review import ReviewContext, render_html

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"
#: Artifact name under which the training run logs its model (``log_model(name="model")``).
MODEL_NAME_IN_RUN = "model"
#: Plots of a training run embedded in the review report.
PLOT_ARTIFACTS: tuple[str, ...] = (
    "confusion_matrix.png",
    "roc_pr_curves.png",
    "training_curves.png",
)
MAX_TAG_VALUE = 5000
MAX_EMBEDDED_IMAGE_BYTES = 4 * 1024 * 1024
REVIEW_DIR = "review"


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version; ``created`` is False when the run was already registered."""

    name: str
    version: str
    run_id: str
    model_id: str | None = None
    source: str | None = None
    created: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`apply_decision` did: the verdict written and the alias moves."""

    name: str
    version: str
    verdict: str
    reasons: list[str]
    champion: str | None
    previous: str | None
    challenger: str | None
    aliases_set: dict[str, str] = field(default_factory=dict)
    aliases_removed: list[str] = field(default_factory=list)
    awaiting_approval: bool = False
    report_artifact: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReviewResult:
    """What a manual action (approve / reject / rollback) changed."""

    action: str
    name: str
    version: str
    who: str
    at: str
    reason: str
    champion_before: str | None
    champion_after: str | None
    previous_after: str | None
    challenger_after: str | None
    changed: bool = True
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionRow:
    """One line of ``mammo registry list``."""

    version: str
    aliases: list[str]
    gate: str
    review: str
    metrics: dict[str, float | None]
    run_id: str | None
    created: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = {
            k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.metrics.items()
        }
        return d


# --------------------------------------------------------------------------------------------
# plumbing


def client_for(settings: Settings | None = None) -> MlflowClient:
    """An MlflowClient on the configured tracking and registry URI.

    The process-wide tracking URI is set too: MLflow 3.17's SQL registry store resolves a
    ``models:/<model_id>`` source with a default ``MlflowClient()`` (the global URI), so
    registering a LoggedModel from a fresh process fails with "Logged model ... not found"
    unless the global URI points at the same store.
    """
    import mlflow
    from mlflow import MlflowClient

    s = settings or get_settings()
    uri = s.mlflow_tracking_uri
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    with contextlib.suppress(Exception):
        if mlflow.get_registry_uri() != uri:
            mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into one-line :class:`MammoError` for the CLI."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MammoError:
        raise
    except MlflowException as exc:
        raise MammoError(f"{what}: {exc.message}") from exc


def reviewer(settings: Settings, who: str | None = None) -> str:
    """Who is acting: explicit, else MAMMO_REVIEWER (settings.reviewer), else the OS user."""
    if who and who.strip():
        return who.strip()
    if settings.reviewer:
        return settings.reviewer
    env = os.environ.get("MAMMO_REVIEWER")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"} or "not found" in str(exc).lower()


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException as exc:
        if _is_not_found(exc):
            return {}
        raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def _aliases_of(aliases: Mapping[str, str], version: str) -> list[str]:
    return sorted(a for a, v in aliases.items() if v == version)


def _get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _is_not_found(exc):
            raise MammoError(f"model {name!r} has no version {version}") from exc
        raise MammoError(f"cannot read {name!r} version {version}: {exc.message}") from exc


def _tag_value(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."


def _set_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if value is None:
            continue
        client.set_model_version_tag(name, version, key, _tag_value(value))


def _delete_tag(client: MlflowClient, name: str, version: str, key: str) -> None:
    with contextlib.suppress(Exception):
        client.delete_model_version_tag(name, version, key)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# --------------------------------------------------------------------------------------------
# register


def _find_logged_model(client: MlflowClient, run: Run) -> tuple[str | None, str]:
    """(model_id, source URI) of the model logged by ``run`` under the name ``model``.

    MLflow 3 stores a model as a LoggedModel linked to the run (``models:/<model_id>``), not
    under the run's artifacts; a run logged the MLflow 2 way (``model/MLmodel`` among the run
    artifacts) is registered from ``runs:/<run_id>/model``.
    """
    from mlflow.entities import LoggedModelStatus

    run_id = run.info.run_id
    found = list(
        client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{_escape(run_id)}'",
        )
    )
    named = [m for m in found if m.name == MODEL_NAME_IN_RUN]
    if named:
        steps = {}
        if run.outputs is not None:
            steps = {o.model_id: o.step for o in run.outputs.model_outputs}
        best = max(named, key=lambda m: (steps.get(m.model_id, -1), m.creation_timestamp or 0))
        if best.status != LoggedModelStatus.READY:
            raise MammoError(
                f"run {run_id}: logged model {best.model_id} is {best.status}, not READY "
                "(did the training task fail while saving the model?)"
            )
        return best.model_id, f"models:/{best.model_id}"
    legacy = [a.path for a in client.list_artifacts(run_id, MODEL_NAME_IN_RUN)]
    if f"{MODEL_NAME_IN_RUN}/MLmodel" in legacy:
        return None, f"runs:/{run_id}/{MODEL_NAME_IN_RUN}"
    raise MammoError(
        f"run {run_id} has no logged model named {MODEL_NAME_IN_RUN!r} "
        f"(found: {', '.join(m.name for m in found) or 'none'})"
    )


def _versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    found = client.search_model_versions(
        f"name = '{_escape(name)}' and run_id = '{_escape(run_id)}'"
    )
    return sorted(found, key=lambda mv: int(mv.version))


def _run_facts(run: Run, airflow_run_id: str | None = None) -> dict[str, Any]:
    """The tags every version carries that come from its training run."""
    metrics = run.data.metrics
    tags = run.data.tags
    facts: dict[str, Any] = {m: metrics[m] for m in TEST_METRICS if m in metrics}
    if "decision_threshold" in metrics:
        facts["decision_threshold"] = metrics["decision_threshold"]
    elif "decision_threshold" in run.data.params:
        facts["decision_threshold"] = run.data.params["decision_threshold"]
    for key in RUN_TAGS_COPIED:
        if tags.get(key):
            facts[key] = tags[key]
    if airflow_run_id:
        facts["airflow_run_id"] = airflow_run_id
    return facts


def register_run(
    settings: Settings | None, run_id: str, airflow_run_id: str | None = None
) -> ModelVersionRef:
    """Register the model of training run ``run_id`` as a version of the registered model.

    Idempotent: when a version of this run already exists (a retried Airflow task), that
    version is returned (``created=False``) and its tags are refreshed; no second version.
    """
    from mlflow.exceptions import MlflowException

    s = settings or get_settings()
    name = s.registered_model_name
    client = client_for(s)
    with _mlflow_errors(f"registering run {run_id} as {name!r}"):
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise MammoError(f"run {run_id} not found at {s.mlflow_tracking_uri}") from exc
        existing = _versions_of_run(client, name, run_id)
        created = not existing
        if existing:
            mv = existing[0]
            source = mv.source
            model_id = getattr(mv, "model_id", None) or (
                source.removeprefix("models:/") if source.startswith("models:/m-") else None
            )
            if len(existing) > 1:
                log.warning(
                    "run %s has %d versions of %s; using v%s",
                    run_id,
                    len(existing),
                    name,
                    mv.version,
                )
        else:
            model_id, source = _find_logged_model(client, run)
            try:
                client.create_registered_model(
                    name, description="VGG16 mammogram lesion classifier (mammo-mlops)"
                )
            except MlflowException as exc:
                if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
                    raise
            facts = _run_facts(run, airflow_run_id)
            facts["gate"] = "pending"
            mv = client.create_model_version(
                name,
                source=source,
                run_id=run_id,
                tags={k: _tag_value(v) for k, v in facts.items()},
                model_id=model_id,
                description=f"training run {run_id}",
            )
            # Lost race with a concurrent retry: keep the oldest version of this run only.
            again = _versions_of_run(client, name, run_id)
            if again and again[0].version != mv.version:
                client.delete_model_version(name, mv.version)
                mv, created = again[0], False
        version = str(mv.version)
        facts = _run_facts(run, airflow_run_id)
        if "gate" not in (mv.tags or {}):
            facts["gate"] = "pending"
        _set_tags(client, name, version, facts)
        client.set_tag(run_id, "registered_model_version", f"{name}/{version}")
    return ModelVersionRef(name, version, run_id, model_id, source, created)


# --------------------------------------------------------------------------------------------
# gate


def _metric_values(run: Run) -> dict[str, Any]:
    return dict(run.data.metrics)


def gate_version(
    settings: Settings | None,
    version: str | int,
    min_precision: float | None = None,
    min_recall: float | None = None,
) -> GateDecision:
    """Check ``version`` against the thresholds and the champion; never raises for data problems.

    Raises :class:`MammoError` only when the version itself cannot be read (nothing to gate).
    """
    s = settings or get_settings()
    name = s.registered_model_name
    client = client_for(s)
    version = str(version)
    p = s.min_precision if min_precision is None else float(min_precision)
    r = s.min_recall if min_recall is None else float(min_recall)
    mv = _get_version(client, name, version)
    failures: list[tuple[str, str]] = []
    metrics: dict[str, Any] = {}
    digest: str | None = None
    champion: ChampionInfo | None = None
    try:
        if mv.status != "READY":
            failures.append(("version_ready", f"version status is {mv.status}, not READY"))
        if (mv.tags or {}).get("review") == "rejected":
            failures.append(
                (
                    "not_rejected",
                    f"rejected by {mv.tags.get('review_by', '?')}: "
                    f"{mv.tags.get('review_reason', '')}".strip(),
                )
            )
        if not mv.run_id:
            failures.append(("run", "version has no training run: metrics unknown"))
        else:
            run = client.get_run(mv.run_id)
            metrics = _metric_values(run)
            digest = run.data.tags.get("test_manifest_sha256") or None
            if run.info.status != "FINISHED":
                failures.append(
                    ("run_finished", f"training run status is {run.info.status}, not FINISHED")
                )
        champ_version = _aliases(client, name).get(CHAMPION)
        if champ_version is not None and champ_version != version:
            champ_mv = client.get_model_version(name, champ_version)
            if champ_mv.run_id:
                champ_run = client.get_run(champ_mv.run_id)
                champion = ChampionInfo(
                    champ_version,
                    _metric_values(champ_run),
                    champ_run.data.tags.get("test_manifest_sha256") or None,
                )
            else:
                champion = ChampionInfo(champ_version, {}, None)
    except Exception as exc:  # fail closed, keep the text
        failures.append(("gate_error", f"{type(exc).__name__}: {exc}"))
    return evaluate_gate(
        metrics,
        min_precision=p,
        min_recall=r,
        tolerance=s.regression_tolerance,
        test_manifest_sha256=digest,
        champion=champion,
        extra_failures=failures,
        version=version,
        model_name=name,
        run_id=mv.run_id,
    )


# --------------------------------------------------------------------------------------------
# promotion


def _promote(
    client: MlflowClient, name: str, version: str, aliases: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """champion -> version, former champion -> previous, challenger removed if it was this."""
    moved: dict[str, str] = {}
    removed: list[str] = []
    old = aliases.get(CHAMPION)
    if old is not None and old != version:
        client.set_registered_model_alias(name, PREVIOUS, old)
        moved[PREVIOUS] = old
    if old != version:
        client.set_registered_model_alias(name, CHAMPION, version)
        moved[CHAMPION] = version
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
        removed.append(CHALLENGER)
    if aliases.get(PREVIOUS) == version and PREVIOUS not in moved:
        client.delete_registered_model_alias(name, PREVIOUS)
        removed.append(PREVIOUS)
    return moved, removed


def apply_decision(
    settings: Settings | None,
    version: str | int,
    decision: GateDecision | Mapping[str, Any],
    airflow_run_id: str | None = None,
) -> PromotionResult:
    """Write the gate's verdict as tags, the review report on the run, then move aliases.

    Pass: ``champion`` (former champion -> ``previous``); with ``require_approval`` the version
    only becomes ``challenger`` with ``awaiting_approval=true``. Fail: ``challenger``.
    A "pass" that its own checks do not support, or made against a champion that has changed
    since, is applied as a fail.
    """
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    d = decision if isinstance(decision, GateDecision) else GateDecision.from_dict(decision)
    if d.version is not None and d.version != version:
        raise MammoError(f"the decision is about version {d.version}, not {version}")
    if d.model_name is not None and d.model_name != name:
        raise MammoError(f"the decision is about model {d.model_name!r}, not {name!r}")
    client = client_for(s)
    notes: list[str] = []
    with _mlflow_errors(f"applying the gate decision to {name!r} v{version}"):
        mv = _get_version(client, name, version)
        aliases = _aliases(client, name)
        passed = d.passed
        reasons = list(d.reasons)
        if passed and not d.is_consistent():
            passed = False
            reasons.append("decision marked passed but its checks do not support it")
        current = aliases.get(CHAMPION)
        if passed and current not in {d.champion_version, version}:
            passed = False
            reasons.append(
                f"champion changed since the gate ran (was v{d.champion_version or 'none'}, "
                f"now v{current}): re-run the gate"
            )
        verdict = "passed" if passed else "failed"
        awaiting = passed and s.require_approval and current != version
        run = client.get_run(mv.run_id) if mv.run_id else None
        tags: dict[str, Any] = _run_facts(run, airflow_run_id) if run else {}
        tags.update(
            {
                "gate": verdict,
                "gate_reasons": "; ".join(reasons) if reasons else "all checks passed",
                "gate_at": d.evaluated_at,
                "gate_min_precision": d.min_precision,
                "gate_min_recall": d.min_recall,
                "gate_tolerance": d.tolerance,
                "gate_champion_version": d.champion_version or "none",
                "gate_checks": json.dumps([c.to_dict() for c in d.checks], separators=(",", ":")),
            }
        )
        if awaiting:
            tags["awaiting_approval"] = "true"
        if passed and not awaiting and current is not None and current != version:
            tags["replaced_champion"] = current
        _set_tags(client, name, version, tags)
        if not awaiting:
            _delete_tag(client, name, version, "awaiting_approval")
        final = GateDecision(
            passed=passed,
            checks=d.checks,
            reasons=reasons,
            champion_version=d.champion_version,
            version=version,
            model_name=name,
            run_id=mv.run_id,
            min_precision=d.min_precision,
            min_recall=d.min_recall,
            tolerance=d.tolerance,
            test_manifest_sha256=d.test_manifest_sha256,
            evaluated_at=d.evaluated_at,
        )
        report = _write_report_safely(client, s, version, final, notes)
        # Aliases last.
        moved: dict[str, str] = {}
        removed: list[str] = []
        if passed and not awaiting:
            moved, removed = _promote(client, name, version, aliases)
        elif current == version:
            notes.append(
                f"v{version} is the champion and failed a re-run of the gate; aliases unchanged "
                "(use `mammo registry rollback` or approve another version)"
            )
        else:
            client.set_registered_model_alias(name, CHALLENGER, version)
            moved[CHALLENGER] = version
        after = _aliases(client, name)
    return PromotionResult(
        name=name,
        version=version,
        verdict=verdict,
        reasons=reasons,
        champion=after.get(CHAMPION),
        previous=after.get(PREVIOUS),
        challenger=after.get(CHALLENGER),
        aliases_set=moved,
        aliases_removed=removed,
        awaiting_approval=awaiting,
        report_artifact=report,
        notes=notes,
    )


def gate_and_apply(
    settings: Settings | None,
    version: str | int,
    min_precision: float | None = None,
    min_recall: float | None = None,
    airflow_run_id: str | None = None,
) -> tuple[GateDecision, PromotionResult]:
    """:func:`gate_version` then :func:`apply_decision` (what the DAG's gate task does)."""
    decision = gate_version(settings, version, min_precision, min_recall)
    return decision, apply_decision(settings, version, decision, airflow_run_id)


# --------------------------------------------------------------------------------------------
# human review


def _review_tags(
    old_tags: Mapping[str, str], action: str, who: str, at: str, reason: str
) -> dict[str, str]:
    """``review``/``review_by``/``review_at``/``review_reason`` plus ``review_history``, a JSON
    list of every manual action on the version (oldest dropped first to fit a tag value)."""
    from mammo_pipeline.review import review_history

    history = review_history(old_tags) if old_tags.get("review_history") else []
    history.append({"action": action, "by": who, "at": at, "reason": reason})
    text = json.dumps(history, separators=(",", ":"))
    while len(text) > MAX_TAG_VALUE and len(history) > 1:
        history.pop(0)
        text = json.dumps(history, separators=(",", ":"))
    return {
        "review": action,
        "review_by": who,
        "review_at": at,
        "review_reason": reason,
        "review_history": text,
    }


def _require_reason(reason: str | None, action: str) -> str:
    if not reason or not reason.strip():
        raise MammoError(f"{action} needs a reason (--reason TEXT)")
    return reason.strip()


def approve(
    settings: Settings | None, version: str | int, reason: str, who: str | None = None
) -> ReviewResult:
    """Make ``version`` the champion whatever the automatic gate said (``gate=manual``)."""
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    reason = _require_reason(reason, "approve")
    person = reviewer(s, who)
    at = utc_now()
    client = client_for(s)
    with _mlflow_errors(f"approving {name!r} v{version}"):
        mv = _get_version(client, name, version)
        aliases = _aliases(client, name)
        before = aliases.get(CHAMPION)
        if before == version:
            return ReviewResult(
                "approve",
                name,
                version,
                person,
                at,
                reason,
                before,
                before,
                aliases.get(PREVIOUS),
                aliases.get(CHALLENGER),
                changed=False,
                message=f"v{version} is already the champion; nothing changed",
            )
        old_tags = mv.tags or {}
        run = client.get_run(mv.run_id) if mv.run_id else None
        tags: dict[str, Any] = _run_facts(run) if run else {}
        tags.update(
            {
                "gate_auto": old_tags.get("gate_auto")
                if old_tags.get("gate") == "manual"
                else old_tags.get("gate", "pending"),
                "gate_reasons_auto": old_tags.get("gate_reasons_auto")
                if old_tags.get("gate") == "manual"
                else old_tags.get("gate_reasons"),
                "gate": "manual",
                "gate_reasons": f"approved by {person}: {reason}",
                **_review_tags(old_tags, "approved", person, at, reason),
            }
        )
        if before is not None:
            tags["replaced_champion"] = before
        _set_tags(client, name, version, tags)
        _delete_tag(client, name, version, "awaiting_approval")
        _write_report_safely(client, s, version, None, [])
        _promote(client, name, version, aliases)
        after = _aliases(client, name)
    return ReviewResult(
        "approve",
        name,
        version,
        person,
        at,
        reason,
        before,
        after.get(CHAMPION),
        after.get(PREVIOUS),
        after.get(CHALLENGER),
        message=f"v{version} is now the champion (was {'v' + before if before else 'none'})",
    )


def reject(
    settings: Settings | None, version: str | int, reason: str, who: str | None = None
) -> ReviewResult:
    """Record a reviewer's rejection; the version loses ``challenger`` / ``previous``.

    The champion cannot be rejected (it is being served): roll back or approve another version
    first. A rejected version fails any later run of the gate until it is approved.
    """
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    reason = _require_reason(reason, "reject")
    person = reviewer(s, who)
    at = utc_now()
    client = client_for(s)
    with _mlflow_errors(f"rejecting {name!r} v{version}"):
        mv = _get_version(client, name, version)
        aliases = _aliases(client, name)
        if aliases.get(CHAMPION) == version:
            raise MammoError(
                f"v{version} is the champion (being served) and cannot be rejected; run "
                "`mammo registry rollback` or approve another version first"
            )
        _set_tags(
            client, name, version, _review_tags(mv.tags or {}, "rejected", person, at, reason)
        )
        _delete_tag(client, name, version, "awaiting_approval")
        _write_report_safely(client, s, version, None, [])
        for alias in (CHALLENGER, PREVIOUS):
            if aliases.get(alias) == version:
                client.delete_registered_model_alias(name, alias)
        after = _aliases(client, name)
    return ReviewResult(
        "reject",
        name,
        version,
        person,
        at,
        reason,
        aliases.get(CHAMPION),
        after.get(CHAMPION),
        after.get(PREVIOUS),
        after.get(CHALLENGER),
        message=f"v{version} rejected",
    )


def rollback(
    settings: Settings | None, reason: str | None = None, who: str | None = None
) -> ReviewResult:
    """Champion back to ``previous``. The new ``previous`` is the champion that one replaced
    (its ``replaced_champion`` tag), so repeated rollbacks walk back the history."""
    s = settings or get_settings()
    name = s.registered_model_name
    reason = (reason or "").strip() or "rollback"
    person = reviewer(s, who)
    at = utc_now()
    client = client_for(s)
    with _mlflow_errors(f"rolling back {name!r}"):
        aliases = _aliases(client, name)
        current, target = aliases.get(CHAMPION), aliases.get(PREVIOUS)
        if current is None:
            raise MammoError(f"{name!r} has no champion: nothing to roll back")
        if target is None or target == current:
            raise MammoError(
                f"{name!r} has no 'previous' version to roll back to (champion is v{current})"
            )
        target_mv = _get_version(client, name, target)
        if (target_mv.tags or {}).get("review") == "rejected":
            raise MammoError(f"previous version v{target} was rejected; approve another version")
        current_mv = _get_version(client, name, current)
        _set_tags(
            client,
            name,
            current,
            _review_tags(current_mv.tags or {}, "rolled_back", person, at, reason),
        )
        _set_tags(
            client,
            name,
            target,
            {"reinstated_by": person, "reinstated_at": at, "reinstated_reason": reason},
        )
        new_previous = _rollback_target_of(client, name, target_mv, exclude={current, target})
        _write_report_safely(client, s, current, None, [])
        # Aliases last: champion first so that a crash leaves the service on the target.
        client.set_registered_model_alias(name, CHAMPION, target)
        if new_previous is not None:
            client.set_registered_model_alias(name, PREVIOUS, new_previous)
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
        after = _aliases(client, name)
    return ReviewResult(
        "rollback",
        name,
        target,
        person,
        at,
        reason,
        current,
        after.get(CHAMPION),
        after.get(PREVIOUS),
        after.get(CHALLENGER),
        message=f"champion v{current} -> v{target}",
    )


def _rollback_target_of(
    client: MlflowClient, name: str, mv: ModelVersion, exclude: set[str]
) -> str | None:
    candidate = (mv.tags or {}).get("replaced_champion")
    if not candidate or candidate in exclude:
        return None
    try:
        prior = client.get_model_version(name, candidate)
    except Exception:
        return None
    if (prior.tags or {}).get("review") == "rejected":
        return None
    return candidate


# --------------------------------------------------------------------------------------------
# listing, comparison and the review report


def list_versions(settings: Settings | None = None) -> list[VersionRow]:
    """All versions, newest first, with aliases, gate verdict and key metrics (from the runs)."""
    from datetime import UTC, datetime

    s = settings or get_settings()
    name = s.registered_model_name
    client = client_for(s)
    rows: list[VersionRow] = []
    with _mlflow_errors(f"listing {name!r}"):
        aliases = _aliases(client, name)
        versions = client.search_model_versions(f"name = '{_escape(name)}'")
        for mv in sorted(versions, key=lambda m: int(m.version), reverse=True):
            metrics: dict[str, Any] = {}
            if mv.run_id:
                try:
                    metrics = _metric_values(client.get_run(mv.run_id))
                except Exception:
                    metrics = {}
            tags = mv.tags or {}
            created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC)
            rows.append(
                VersionRow(
                    version=str(mv.version),
                    aliases=_aliases_of(aliases, str(mv.version)),
                    gate=tags.get("gate", "-"),
                    review=tags.get("review", ""),
                    metrics={
                        m: metrics.get(m)
                        for m in (
                            "test_precision",
                            "test_recall",
                            "test_f1",
                            "test_roc_auc",
                            "decision_threshold",
                        )
                    },
                    run_id=mv.run_id,
                    created=created.strftime("%Y-%m-%d %H:%M"),
                )
            )
    return rows


def _gate_decision_from_tags(tags: Mapping[str, str]) -> GateDecision | None:
    """The last automatic decision, rebuilt from the version's tags (also after approval)."""
    manual = tags.get("gate") == "manual"
    verdict = tags.get("gate_auto") if manual else tags.get("gate")
    raw = tags.get("gate_checks")
    if not raw or verdict not in {"passed", "failed"}:
        return None
    try:
        checks = json.loads(raw)
    except ValueError:
        return None
    reasons = tags.get("gate_reasons_auto" if manual else "gate_reasons", "")
    return GateDecision.from_dict(
        {
            "passed": verdict == "passed",
            "checks": checks,
            "reasons": [] if verdict == "passed" else reasons.split("; "),
            "champion_version": None
            if tags.get("gate_champion_version") in {None, "none"}
            else tags["gate_champion_version"],
            "evaluated_at": tags.get("gate_at"),
        }
    )


def _artifact_links(settings: Settings, client: MlflowClient, run: Run) -> dict[str, str]:
    """name -> where to open it: the UI for a remote server, the artifact URI otherwise."""
    uri = settings.mlflow_tracking_uri
    run_id = run.info.run_id
    links: dict[str, str] = {}
    try:
        files = [a.path for a in client.list_artifacts(run_id) if not a.is_dir]
        files += [a.path for a in client.list_artifacts(run_id, REVIEW_DIR) if not a.is_dir]
    except Exception:
        files = []
    for path in files:
        if not path.endswith((".png", ".html", ".json")):
            continue
        if uri.startswith(("http://", "https://")):
            links[path] = (
                f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
                f"/artifacts/{path}"
            )
        else:
            links[path] = f"{run.info.artifact_uri.rstrip('/')}/{path}"
    return links


def review_context(
    settings: Settings | None,
    version: str | int,
    decision: GateDecision | None = None,
    *,
    with_images: bool = False,
) -> ReviewContext:
    """The version beside the champion, metric by metric, with links to its plots."""
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    client = client_for(s)
    with _mlflow_errors(f"reading {name!r} v{version}"):
        mv = _get_version(client, name, version)
        aliases = _aliases(client, name)
        tags = dict(mv.tags or {})
        run = client.get_run(mv.run_id) if mv.run_id else None
        if run is not None:
            for k, v in run.data.tags.items():
                if k in RUN_TAGS_COPIED:
                    tags.setdefault(k, v)
        champ = aliases.get(CHAMPION)
        if decision is not None:
            champ = decision.champion_version or (champ if champ != version else None)
        if champ == version:
            champ = None
        champ_metrics: dict[str, Any] = {}
        if champ is not None:
            try:
                cmv = client.get_model_version(name, champ)
                if cmv.run_id:
                    champ_metrics = _metric_values(client.get_run(cmv.run_id))
            except Exception:
                champ_metrics = {}
        images: dict[str, bytes] = {}
        links = _artifact_links(s, client, run) if run is not None else {}
        if with_images and run is not None:
            images = _download_plots(client, run.info.run_id, links)
    return ReviewContext(
        model_name=name,
        version=version,
        run_id=mv.run_id,
        aliases=_aliases_of(aliases, version),
        tags=tags,
        candidate_metrics=_metric_values(run) if run is not None else {},
        champion_version=champ,
        champion_metrics=champ_metrics,
        min_precision=decision.min_precision
        if decision and decision.min_precision is not None
        else s.min_precision,
        min_recall=decision.min_recall
        if decision and decision.min_recall is not None
        else s.min_recall,
        tolerance=s.regression_tolerance,
        decision=decision if decision is not None else _gate_decision_from_tags(tags),
        images=images,
        links=links,
    )


def _download_plots(
    client: MlflowClient, run_id: str, links: Mapping[str, str]
) -> dict[str, bytes]:
    images: dict[str, bytes] = {}
    wanted = [p for p in links if p.endswith(".png") and "/" not in p]
    wanted.sort(key=lambda p: (p not in PLOT_ARTIFACTS, p))
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        for path in wanted[:8]:
            try:
                local = Path(client.download_artifacts(run_id, path, tmp))
            except Exception as exc:
                log.warning("cannot download %s of run %s: %s", path, run_id, exc)
                continue
            if local.stat().st_size <= MAX_EMBEDDED_IMAGE_BYTES:
                images[path] = local.read_bytes()
    return images


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar per download on stderr; not wanted in CLI output."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def report_artifact_path(version: str) -> str:
    return f"{REVIEW_DIR}/version-{version}.html"


def write_review_report(
    settings: Settings | None, version: str | int, decision: GateDecision | None = None
) -> str:
    """Render the review report and log it (plus ``gate_decision-<V>.json``) on the run.

    Returns the artifact path of the report under the run.
    """
    s = settings or get_settings()
    client = client_for(s)
    version = str(version)
    ctx = review_context(s, version, decision, with_images=True)
    if ctx.run_id is None:
        raise MammoError(f"v{version} has no run to attach the report to")
    html_text = render_html(ctx)
    with tempfile.TemporaryDirectory() as tmp, _mlflow_errors("writing the review report"):
        page = Path(tmp) / f"version-{version}.html"
        page.write_text(html_text, encoding="utf-8")
        client.log_artifact(ctx.run_id, str(page), artifact_path=REVIEW_DIR)
        if ctx.decision is not None:
            js = Path(tmp) / f"gate_decision-{version}.json"
            js.write_text(ctx.decision.to_json(), encoding="utf-8")
            client.log_artifact(ctx.run_id, str(js), artifact_path=REVIEW_DIR)
        client.set_tag(ctx.run_id, "gate", ctx.tags.get("gate", "pending"))
        client.set_tag(ctx.run_id, "review_report", report_artifact_path(version))
    return report_artifact_path(version)


def _write_report_safely(
    client: MlflowClient,
    settings: Settings,
    version: str,
    decision: GateDecision | None,
    notes: list[str],
) -> str | None:
    """The report is for people; failing to write it must not block a decision already taken
    (the tags carry it). The failure is recorded as a version tag and a note."""
    try:
        return write_review_report(settings, version, decision)
    except Exception as exc:
        msg = f"review report not written: {type(exc).__name__}: {exc}"
        log.warning(msg)
        notes.append(msg)
        with contextlib.suppress(Exception):
            client.set_model_version_tag(
                settings.registered_model_name, version, "review_report_error", _tag_value(msg)
            )
        return None
