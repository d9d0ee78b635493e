"""The automatic gate applied to a registered version: read its metrics and the champion's,
decide (:mod:`.gate`), write the verdict as tags, then move the aliases.

:func:`gate_version` never raises for problems in the data it checks: they fail the gate.
The verdict tags and the alias moves of one decision are planned, journaled and made as one
crash-consistent action (:mod:`.journal`): tags first, aliases last.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.registry.attestation import (
    attest_candidate,
    attest_reference,
    decision_record,
)
from mammo_pipeline.registry.baseline import baseline_deltas, update_baseline
from mammo_pipeline.registry.decision import REGRESSION_METRICS, GateDecision
from mammo_pipeline.registry.evidence import load_evidence
from mammo_pipeline.registry.gate import evaluate_gate
from mammo_pipeline.registry.journal import Plan
from mammo_pipeline.registry.lock import registry_lock, repairs
from mammo_pipeline.registry.names import (
    BASELINE,
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    SIGNED_DECISION,
    TRUE,
    Tag,
    Verdict,
)
from mammo_pipeline.registry.policy import GatePolicy, tightened
from mammo_pipeline.registry.rejection import signed_rejection
from mammo_pipeline.registry.report import write_report_safely
from mammo_pipeline.registry.state import VersionState
from mammo_pipeline.registry.store import (
    get_version,
    mlflow_errors,
    read_aliases,
    run_facts,
)


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`record_verdict` did: the verdict written and the alias moves."""

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
    policy: GatePolicy | None = None,
    *,
    requested: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Check ``version`` against the policy, the champion and the baseline; never raises for
    data problems (they fail the gate). ``requested`` may only tighten the deployment's
    policy (:func:`~.policy.tightened`; a looser value raises :class:`ConfigError`).

    Raises :class:`MammoError` only when the version itself cannot be read (nothing to gate).
    """
    s = settings or get_settings()
    name = s.registered_model_name
    client = mlflow_client(s)
    version = str(version)
    policy = tightened(policy or GatePolicy.from_settings(s), requested)
    mv = get_version(client, name, version)
    failures: list[tuple[str, str]] = []
    candidate = load_evidence(client, name, version)
    attest_candidate(s, name, candidate)  # signed evaluation + re-scoring (evidence_intact)
    champion = baseline = None
    try:
        if mv.status != "READY":
            failures.append(("version_ready", f"version status is {mv.status}, not READY"))
        state = VersionState.of(version, mv.tags or {})
        signed_no = signed_rejection(s, name, version, mv.run_id, mv.tags or {})
        if state.rejected and state.review is not None:
            failures.append(
                ("not_rejected", f"rejected by {state.review.by or '?'}: {state.review.reason}")
            )
        elif signed_no is not None:  # the review tags were changed by hand since
            p = signed_no.payload
            failures.append(
                ("not_rejected", f"rejected by {p.get('rejected_by')} (signed): {p.get('reason')}")
            )
        if candidate.run_status is not None and candidate.run_status != "FINISHED":
            failures.append(
                ("run_finished", f"training run status is {candidate.run_status}, not FINISHED")
            )
        aliases = read_aliases(client, name)
        if aliases.get(CHAMPION) not in {None, version}:
            champion = load_evidence(client, name, aliases[CHAMPION])
        if aliases.get(BASELINE) not in {None, version}:
            baseline = (  # usually the same version: read its artifact once
                champion
                if champion is not None and champion.version == aliases[BASELINE]
                else load_evidence(client, name, aliases[BASELINE])
            )
        for reference in {id(r): r for r in (champion, baseline) if r is not None}.values():
            attest_reference(s, reference)
    except Exception as exc:  # fail closed, keep the text
        failures.append(("gate_error", f"{type(exc).__name__}: {exc}"))
    return evaluate_gate(
        candidate,
        policy=policy,
        champion=champion,
        baseline=baseline,
        extra_failures=failures,
        model_name=name,
    )


def _statistics_tags(d: GateDecision) -> dict[str, Any]:
    """A readable summary of the gate's statistics for the version's tags (the full numbers
    are in ``review/gate_decision-<V>.json`` on the run)."""
    from mammo_pipeline.stats import Interval, PairedComparison

    stats = d.statistics or {}
    tags: dict[str, Any] = {}
    if "n" in stats:
        tags["gate_test_n"] = stats["n"]
        tags["gate_test_positives"] = stats.get("positives")
    for key in ("precision", "recall"):
        if key in stats:
            tags[f"gate_{key}_ci"] = Interval.from_dict(stats[key]).describe()
    for role in ("champion", "baseline"):
        data = stats.get(f"vs_{role}")
        if data:
            comparison = PairedComparison.from_dict(
                {k: v for k, v in data.items() if k != "version"}
            )
            tags[f"gate_vs_{role}"] = f"v{data['version']}: " + "; ".join(
                getattr(comparison, m).describe() for m in REGRESSION_METRICS
            )
    return tags


def promote_aliases(plan: Plan, version: str) -> tuple[dict[str, str], list[str]]:
    """Plan champion -> version, former champion -> previous, and remove ``challenger`` (or
    ``previous``) when it was this version."""
    moved: dict[str, str] = {}
    removed: list[str] = []
    aliases = dict(plan.aliases)
    old = aliases.get(CHAMPION)
    if old is not None and old != version:
        plan.set_alias(PREVIOUS, old)
        moved[PREVIOUS] = old
    if old != version:
        plan.set_alias(CHAMPION, version)
        moved[CHAMPION] = version
    if aliases.get(CHALLENGER) == version:
        plan.delete_alias(CHALLENGER)
        removed.append(CHALLENGER)
    if aliases.get(PREVIOUS) == version and PREVIOUS not in moved:
        plan.delete_alias(PREVIOUS)
        removed.append(PREVIOUS)
    return moved, removed


def record_verdict(
    settings: Settings | None,
    version: str | int,
    decision: GateDecision,
    *,
    run_tags: Mapping[str, str] | None = None,
    extra_tags: Mapping[str, Any] | None = None,
) -> PromotionResult:
    """Write the gate's verdict on ``version`` as tags, the review report on the run, then move
    the aliases, under the registry lock: what :func:`gate_and_promote` and an approval's
    re-gate do with the decision they just made under the same lock.

    Pass: ``champion`` (former champion -> ``previous``); with ``require_approval`` the version
    only becomes ``challenger`` with ``awaiting_approval=true``. Fail: ``challenger``.
    A "pass" that its own checks do not support, made against references that are no longer
    the champion or baseline, or without signed re-scored evidence, is written as a fail.
    ``run_tags`` (e.g. the Airflow run and DAG ids) are copied onto the version with the run's
    facts; ``extra_tags`` (a reviewer's record) are written in the same crash-consistent action.
    """
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    d = decision
    client = mlflow_client(s)
    notes: list[str] = []
    with (
        registry_lock(s),
        mlflow_errors(f"applying the gate decision to {name!r} v{version}"),
    ):
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
        base = aliases.get(BASELINE)
        if passed and base not in {d.baseline_version, d.champion_version, version}:
            passed = False
            reasons.append(f"baseline changed since the gate ran (now v{base}): re-run the gate")
        policy = GatePolicy(**d.policy) if d.policy else GatePolicy.from_settings(s)
        attested = (d.statistics or {}).get("evidence") or {}
        if passed and not (attested.get("model_sha256") and attested.get("rescore")):
            passed = False
            reasons.append("the decision carries no signed, re-scored evidence: re-run the gate")
        verdict = Verdict.PASSED if passed else Verdict.FAILED
        awaiting = passed and policy.require_approval and current != version
        run = client.get_run(mv.run_id) if mv.run_id else None
        tags: dict[str, Any] = run_facts(run, run_tags) if run else {}
        tags.update(
            {
                Tag.GATE: verdict,
                Tag.GATE_REASONS: "; ".join(reasons) if reasons else "all checks passed",
                Tag.GATE_AT: d.evaluated_at,
                Tag.GATE_MIN_PRECISION: d.min_precision,
                Tag.GATE_MIN_RECALL: d.min_recall,
                Tag.GATE_TOLERANCE: d.tolerance,
                Tag.GATE_CHAMPION_VERSION: d.champion_version or "none",
                Tag.GATE_BASELINE_VERSION: d.baseline_version or "none",
                Tag.GATE_POLICY: policy.to_json(),
                Tag.GATE_CHECKS: json.dumps([c.to_dict() for c in d.checks], separators=(",", ":")),
                **_statistics_tags(d),
            }
        )
        if awaiting:
            tags[Tag.AWAITING_APPROVAL] = TRUE
        deltas = baseline_deltas(d, base)
        if deltas is not None:  # for an approval days later: may the baseline move?
            tags[Tag.GATE_DELTAS_VS_BASELINE] = json.dumps(deltas, separators=(",", ":"))
        if passed and not awaiting and current is not None and current != version:
            tags[Tag.REPLACED_CHAMPION] = current
        tags.update(extra_tags or {})
        tags[SIGNED_DECISION] = decision_record(  # the authority; the tags above are labels
            s, name=name, version=version, run_id=mv.run_id, verdict=verdict,
            awaiting_approval=awaiting, policy=policy, champion=d.champion_version,
            baseline=d.baseline_version, evidence=attested,
        )  # fmt: skip
        plan = Plan.start(
            client, name, f"gate verdict on v{version} ({verdict})", version, aliases,
            {version: mv.tags or {}},
        )  # fmt: skip
        plan.set_tags(version, tags)
        if not awaiting:
            plan.delete_tag(version, Tag.AWAITING_APPROVAL)
        final = dataclasses.replace(
            d, passed=passed, reasons=reasons, version=version, model_name=name,
            run_id=mv.run_id, policy=policy.to_dict(),
        )  # fmt: skip
        moved: dict[str, str] = {}
        removed: list[str] = []
        if passed and not awaiting:
            moved, removed = promote_aliases(plan, version)
            deltas = baseline_deltas(final, aliases.get(BASELINE))
            moved.update(update_baseline(plan, version, deltas, notes))
        elif current == version:
            notes.append(
                f"v{version} is the champion and failed a re-run of the gate; aliases unchanged "
                "(use `mammo registry rollback` or approve another version)"
            )
        else:
            plan.set_alias(CHALLENGER, version)
            moved[CHALLENGER] = version
        report: list[str | None] = [None]

        def write_report() -> None:  # after the tags, before the aliases move
            report[0] = write_report_safely(client, s, version, final, notes)

        plan.commit(between=write_report)
        notes[:0] = [f"repaired first: {r}" for r in repairs()]
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
        report_artifact=report[0],
        notes=notes,
    )


def gate_and_promote(
    settings: Settings | None,
    version: str | int,
    *,
    requested: Mapping[str, Any] | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> tuple[GateDecision, PromotionResult]:
    """Gate and promote atomically (the DAG's gate task and ``mammo registry gate``): under
    the registry-wide lock, read the champion and baseline, decide (:func:`gate_version`),
    record the verdict and move the aliases (:func:`record_verdict`). Concurrent gates
    therefore serialise, each compared with the champion it would actually replace.
    ``run_tags`` (e.g. ``{"airflow_run_id": ..., "airflow_dag_id": ...}``) are copied onto
    the version."""
    s = settings or get_settings()
    with registry_lock(s):
        decision = gate_version(s, version, requested=requested)
        return decision, record_verdict(s, version, decision, run_tags=run_tags)
