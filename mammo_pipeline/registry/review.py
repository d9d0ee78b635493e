"""What people do in the registry: approve a version, reject one, roll the champion back.

Every action is recorded as tags on the version (who, when, why, and a bounded history). The
tags and alias moves of one action are planned, journaled and made as one crash-consistent
action (:mod:`.journal`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.attestation import approval_record
from mammo_pipeline.registry.decision import utc_now
from mammo_pipeline.registry.identity import Identity, acting
from mammo_pipeline.registry.journal import Plan
from mammo_pipeline.registry.lock import registry_lock, repairs
from mammo_pipeline.registry.names import (
    BASELINE,
    CHALLENGER,
    CHAMPION,
    MAX_TAG_VALUE,
    PREVIOUS,
    SIGNED_DECISION,
    SIGNED_REVIEW,
    TRUE,
    Review,
    Tag,
    Verdict,
)
from mammo_pipeline.registry.policy import GatePolicy
from mammo_pipeline.registry.promotion import promote_aliases
from mammo_pipeline.registry.rejection import rejection_record, signed_rejection
from mammo_pipeline.registry.report import write_report_safely
from mammo_pipeline.registry.state import VersionState
from mammo_pipeline.registry.store import (
    aliases_of,
    get_version,
    mlflow_errors,
    read_aliases,
    run_facts,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


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
    #: What taking the registry lock repaired first (an interrupted action completed).
    repaired: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(
        cls,
        action: str,
        name: str,
        version: str,
        who: str,
        at: str,
        reason: str,
        champion_before: str | None,
        after: Mapping[str, str],
        *,
        changed: bool = True,
        message: str = "",
    ) -> ReviewResult:
        """The result, with the aliases as they are ``after`` the action (and what the registry
        lock held now repaired first)."""
        return cls(action, name, version, who, at, reason, champion_before,
                   after.get(CHAMPION), after.get(PREVIOUS), after.get(CHALLENGER),
                   changed=changed, message=message, repaired=tuple(repairs()))  # fmt: skip


def review_tags(
    old_tags: Mapping[str, str], action: str, who: Identity, at: str, reason: str
) -> dict[str, str]:
    """``review``/``review_by`` (and ``review_by_source``: how that identity was
    authenticated)/``review_at``/``review_reason`` plus ``review_history``, a JSON list of
    every manual action on the version (oldest dropped first to fit a tag value)."""
    from mammo_pipeline.registry.report_html import review_history

    history = review_history(old_tags) if old_tags.get(Tag.REVIEW_HISTORY) else []
    history.append({"action": action, "by": who.name, "source": who.source, "at": at,
                    "reason": reason})  # fmt: skip
    text = json.dumps(history, separators=(",", ":"))
    while len(text) > MAX_TAG_VALUE and len(history) > 1:
        history.pop(0)
        text = json.dumps(history, separators=(",", ":"))
    return {
        Tag.REVIEW: action,
        Tag.REVIEW_BY: who.name,
        Tag.REVIEW_BY_SOURCE: who.source,
        Tag.REVIEW_AT: at,
        Tag.REVIEW_REASON: reason,
        Tag.REVIEW_HISTORY: text,
    }


def require_reason(reason: str | None, action: str) -> str:
    if not reason or not reason.strip():
        raise MammoError(f"{action} needs a reason (--reason TEXT)")
    return reason.strip()


def approve(
    settings: Settings | None,
    version: str | int,
    reason: str,
    who: Identity | None = None,
    *,
    override_rejection: bool = False,
    override_gate: bool = False,
) -> ReviewResult:
    """A person's approval of ``version``, under the registry lock.

    * A version that passed the gate and waits for approval goes through the gate again when
      the champion or the baseline changed since the gate ran (an approval can come days
      later); it is promoted only if it still passes, keeping ``gate=passed``.
    * Any other version is made the champion by the person's decision (``gate=manual``, the
      automatic verdict kept as ``gate_auto``).
    * A version a reviewer rejected needs ``override_rejection=True`` (and the reason).
    * A version whose automatic verdict is not ``passed`` (failed, pending) needs
      ``override_gate=True``: recorded as ``gate_override``; it never moves the baseline.
    * ``who`` is the authenticated identity (Airflow's user); None: the CLI's
      (:func:`~.identity.cli_identity`). ``MAMMO_APPROVERS`` is enforced either way.
    """
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    reason = require_reason(reason, "approve")
    actor = acting(s, who, "approve a version")
    person = actor.name
    at = utc_now()
    client = mlflow_client(s)
    with registry_lock(s), mlflow_errors(f"approving {name!r} v{version}"):
        mv = get_version(client, name, version)
        aliases = read_aliases(client, name)
        before = aliases.get(CHAMPION)
        old_tags = mv.tags or {}
        state = VersionState.of(version, old_tags, aliases_of(aliases, version))
        signed_no = signed_rejection(s, name, version, mv.run_id, old_tags)
        if (state.rejected or signed_no) and not override_rejection:
            by, why = (
                (state.review.by, state.review.reason)
                if state.rejected and state.review is not None
                else (signed_no.payload.get("rejected_by"), signed_no.payload.get("reason"))
                if signed_no is not None
                else (None, None)
            )
            raise MammoError(
                f"v{version} was rejected by {by or '?'} ({why or 'no reason recorded'}); "
                "approving it needs --override-rejection and a reason"
            )
        if state.gate == Verdict.PASSED and state.awaiting_approval:
            return _approve_gated(s, client, version, reason, actor, at, aliases)
        if before == version:
            return ReviewResult.of(
                "approve",
                name,
                version,
                person,
                at,
                reason,
                before,
                aliases,
                changed=False,
                message=f"v{version} is already the champion; nothing changed",
            )
        auto = state.auto_verdict
        if auto != Verdict.PASSED and not override_gate:
            why = state.auto_reasons or "no reasons recorded"
            raise MammoError(
                f"v{version} did not pass the gate (gate={auto}: {why[:300]}); making it the "
                "champion anyway is an explicit override: --override-gate with a reason"
            )
        run = client.get_run(mv.run_id) if mv.run_id else None
        tags: dict[str, Any] = run_facts(run) if run else {}
        if auto != Verdict.PASSED:  # recorded, listed and reported; never moves the baseline
            tags.update({Tag.GATE_OVERRIDE: TRUE, Tag.GATE_OVERRIDE_BY: person,
                         Tag.GATE_OVERRIDE_AT: at, Tag.GATE_OVERRIDE_REASON: reason})  # fmt: skip
        tags.update(
            {
                Tag.GATE_AUTO: auto,
                Tag.GATE_REASONS_AUTO: state.auto_reasons or None,
                Tag.GATE: Verdict.MANUAL,
                Tag.GATE_REASONS: f"approved by {person}: {reason}",
                **review_tags(old_tags, Review.APPROVED, actor, at, reason),
            }
        )
        if before is not None:
            tags[Tag.REPLACED_CHAMPION] = before
        tags[SIGNED_DECISION] = approval_record(
            s, client, name, mv, who=person, at=at, reason=reason, gate=auto
        )
        plan = Plan.start(
            client, name, f"approval of v{version} by {person}", version, aliases,
            {version: old_tags},
        )  # fmt: skip
        plan.set_tags(version, tags)
        plan.delete_tag(version, Tag.AWAITING_APPROVAL)
        if SIGNED_REVIEW in old_tags:  # the rejection is lifted by this (signed) approval
            plan.delete_tag(version, SIGNED_REVIEW)
        promote_aliases(plan, version)
        plan.commit(between=lambda: write_report_safely(client, s, version, None, []))
        after = read_aliases(client, name)
    return ReviewResult.of(
        "approve",
        name,
        version,
        person,
        at,
        reason,
        before,
        after,
        message=f"v{version} is now the champion (was {'v' + before if before else 'none'})",
    )


def _approve_gated(
    s: Settings,
    client: MlflowClient,
    version: str,
    reason: str,
    actor: Identity,
    at: str,
    aliases: Mapping[str, str],
) -> ReviewResult:
    """Approval of a version that passed the gate and waited for a person: re-gate when the
    references changed, then promote (or record why not)."""
    from mammo_pipeline.registry.baseline import deltas_from_tag, update_baseline
    from mammo_pipeline.registry.promotion import gate_version, record_verdict

    name = s.registered_model_name
    tags = client.get_model_version(name, version).tags or {}
    before = aliases.get(CHAMPION)
    gated_against = {
        CHAMPION: tags.get(Tag.GATE_CHAMPION_VERSION, "none"),
        BASELINE: tags.get(Tag.GATE_BASELINE_VERSION, "none"),
    }
    changed = [
        f"{alias} v{gated_against[alias]} -> v{aliases.get(alias)}"
        for alias in (CHAMPION, BASELINE)
        if gated_against[alias] != "none"
        and aliases.get(alias) not in {gated_against[alias], version}
        or gated_against[alias] == "none"
        and aliases.get(alias) not in {None, version}
    ]
    person = actor.name
    record = review_tags(tags, Review.APPROVED, actor, at, reason)
    message = f"v{version} approved by {person}"
    if changed:
        raw = tags.get(Tag.GATE_POLICY)
        policy = GatePolicy(**json.loads(raw)) if raw else None
        if policy is not None:
            policy = GatePolicy(**{**policy.to_dict(), "require_approval": False})
        decision = gate_version(s, version, policy)
        result = record_verdict(s, version, decision, extra_tags=record)
        message += (
            f"; the references changed since the gate ran ({', '.join(changed)}): re-gated, "
            f"{result.verdict}"
        )
        if result.verdict != Verdict.PASSED:
            message += ": " + "; ".join(result.reasons)
    else:
        mv = client.get_model_version(name, version)
        record[SIGNED_DECISION] = approval_record(
            s, client, name, mv, who=person, at=at, reason=reason, gate=Verdict.PASSED
        )
        plan = Plan.start(
            client, name, f"approval of v{version} by {person}", version, aliases,
            {version: tags},
        )  # fmt: skip
        plan.set_tags(version, record)
        plan.delete_tag(version, Tag.AWAITING_APPROVAL)
        if SIGNED_REVIEW in tags:
            plan.delete_tag(version, SIGNED_REVIEW)
        if before is not None and before != version:
            plan.set_tags(version, {Tag.REPLACED_CHAMPION: before})
        promote_aliases(plan, version)
        notes: list[str] = []
        update_baseline(plan, version, deltas_from_tag(tags), notes)
        plan.commit(between=lambda: write_report_safely(client, s, version, None, notes))
    after = read_aliases(client, name)
    if after.get(CHAMPION) == version:
        message += f"; v{version} is now the champion (was {'v' + before if before else 'none'})"
    return ReviewResult.of(
        "approve",
        name,
        version,
        person,
        at,
        reason,
        before,
        after,
        changed=after.get(CHAMPION) != before,
        message=message,
    )


def reject(
    settings: Settings | None, version: str | int, reason: str, who: Identity | None = None
) -> ReviewResult:
    """Record a reviewer's rejection; the version loses ``challenger`` / ``previous``.

    The champion cannot be rejected (it is being served): roll back or approve another version
    first. A rejected version fails any later run of the gate until it is approved.
    """
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    reason = require_reason(reason, "reject")
    actor = acting(s, who, "reject a version")
    person = actor.name
    at = utc_now()
    client = mlflow_client(s)
    with registry_lock(s), mlflow_errors(f"rejecting {name!r} v{version}"):
        mv = get_version(client, name, version)
        aliases = read_aliases(client, name)
        if aliases.get(CHAMPION) == version:
            raise MammoError(
                f"v{version} is the champion (being served) and cannot be rejected; run "
                "`mammo registry rollback` or approve another version first"
            )
        plan = Plan.start(
            client, name, f"rejection of v{version} by {person}", version, aliases,
            {version: mv.tags or {}},
        )  # fmt: skip
        plan.set_tags(version, review_tags(mv.tags or {}, Review.REJECTED, actor, at, reason))
        # signed like an approval: the review tags must match it, and as the latest decision
        # it replaces a passed gate decision (a rejected version is never served)
        signed = rejection_record(s, name, mv, who=actor, at=at, reason=reason)
        plan.set_tags(version, {SIGNED_REVIEW: signed, SIGNED_DECISION: signed})
        plan.delete_tag(version, Tag.AWAITING_APPROVAL)
        for alias in (CHALLENGER, PREVIOUS):
            if aliases.get(alias) == version:
                plan.delete_alias(alias)
        plan.commit(between=lambda: write_report_safely(client, s, version, None, []))
        after = read_aliases(client, name)
    return ReviewResult.of(
        "reject",
        name,
        version,
        person,
        at,
        reason,
        aliases.get(CHAMPION),
        after,
        message=f"v{version} rejected",
    )
