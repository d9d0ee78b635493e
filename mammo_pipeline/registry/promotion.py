"""The automatic gate applied to a registered version: read its metrics and the champion's,
decide (:mod:`.gate`), write the verdict as tags, then move the aliases.

:func:`gate_version` never raises for problems in the data it checks: they fail the gate.
Tags are always written before any alias moves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.gate import ChampionInfo, GateDecision, evaluate_gate
from mammo_pipeline.registry.names import CHALLENGER, CHAMPION, PREVIOUS
from mammo_pipeline.registry.report import write_report_safely
from mammo_pipeline.registry.store import (
    delete_tag,
    get_version,
    metric_values,
    mlflow_errors,
    read_aliases,
    run_facts,
    set_tags,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


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
    client = mlflow_client(s)
    version = str(version)
    p = s.min_precision if min_precision is None else float(min_precision)
    r = s.min_recall if min_recall is None else float(min_recall)
    mv = get_version(client, name, version)
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
            metrics = metric_values(run)
            digest = run.data.tags.get("test_manifest_sha256") or None
            if run.info.status != "FINISHED":
                failures.append(
                    ("run_finished", f"training run status is {run.info.status}, not FINISHED")
                )
        champ_version = read_aliases(client, name).get(CHAMPION)
        if champ_version is not None and champ_version != version:
            champ_mv = client.get_model_version(name, champ_version)
            if champ_mv.run_id:
                champ_run = client.get_run(champ_mv.run_id)
                champion = ChampionInfo(
                    champ_version,
                    metric_values(champ_run),
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


def promote_aliases(
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
    client = mlflow_client(s)
    notes: list[str] = []
    with mlflow_errors(f"applying the gate decision to {name!r} v{version}"):
        mv = get_version(client, name, version)
        aliases = read_aliases(client, name)
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
        tags: dict[str, Any] = run_facts(run, airflow_run_id) if run else {}
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
        set_tags(client, name, version, tags)
        if not awaiting:
            delete_tag(client, name, version, "awaiting_approval")
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
        report = write_report_safely(client, s, version, final, notes)
        # Aliases last.
        moved: dict[str, str] = {}
        removed: list[str] = []
        if passed and not awaiting:
            moved, removed = promote_aliases(client, name, version, aliases)
        elif current == version:
            notes.append(
                f"v{version} is the champion and failed a re-run of the gate; aliases unchanged "
                "(use `mammo registry rollback` or approve another version)"
            )
        else:
            client.set_registered_model_alias(name, CHALLENGER, version)
            moved[CHALLENGER] = version
        after = read_aliases(client, name)
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
