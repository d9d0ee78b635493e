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
)
from mammo_pipeline.registry.policy import GatePolicy
from mammo_pipeline.registry.promotion import promote_aliases
from mammo_pipeline.registry.report import write_report_safely
from mammo_pipeline.registry.store import (
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

    history = review_history(old_tags) if old_tags.get("review_history") else []
    history.append({"action": action, "by": who.name, "source": who.source, "at": at,
                    "reason": reason})  # fmt: skip
    text = json.dumps(history, separators=(",", ":"))
    while len(text) > MAX_TAG_VALUE and len(history) > 1:
        history.pop(0)
        text = json.dumps(history, separators=(",", ":"))
    return {
        "review": action,
        "review_by": who.name,
        "review_by_source": who.source,
        "review_at": at,
        "review_reason": reason,
        "review_history": text,
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
        old = mv.tags or {}
        if old.get("review") == "rejected" and not override_rejection:
            raise MammoError(
                f"v{version} was rejected by {old.get('review_by', '?')} "
                f"({old.get('review_reason', 'no reason recorded')}); approving it needs "
                "--override-rejection and a reason"
            )
        if old.get("gate") == "passed" and old.get("awaiting_approval") == "true":
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
        old_tags = mv.tags or {}
        auto = (
            old_tags.get("gate_auto") if old_tags.get("gate") == "manual" else old_tags.get("gate")
        ) or "pending"
        if auto != "passed" and not override_gate:
            why = old_tags.get("gate_reasons_auto" if old_tags.get("gate") == "manual"
                               else "gate_reasons") or "no reasons recorded"  # fmt: skip
            raise MammoError(
                f"v{version} did not pass the gate (gate={auto}: {why[:300]}); making it the "
                "champion anyway is an explicit override: --override-gate with a reason"
            )
        run = client.get_run(mv.run_id) if mv.run_id else None
        tags: dict[str, Any] = run_facts(run) if run else {}
        if auto != "passed":  # recorded, listed and reported; never moves the baseline
            tags.update({"gate_override": "true", "gate_override_by": person,
                         "gate_override_at": at, "gate_override_reason": reason})  # fmt: skip
        tags.update(
            {
                "gate_auto": auto,
                "gate_reasons_auto": old_tags.get("gate_reasons_auto")
                if old_tags.get("gate") == "manual"
                else old_tags.get("gate_reasons"),
                "gate": "manual",
                "gate_reasons": f"approved by {person}: {reason}",
                **review_tags(old_tags, "approved", actor, at, reason),
            }
        )
        if before is not None:
            tags["replaced_champion"] = before
        tags[SIGNED_DECISION] = approval_record(
            s, client, name, mv, who=person, at=at, reason=reason,
            gate=str(tags["gate_auto"] or "pending"),
        )  # fmt: skip
        plan = Plan.start(
            client, name, f"approval of v{version} by {person}", version, aliases,
            {version: old_tags},
        )  # fmt: skip
        plan.set_tags(version, tags)
        plan.delete_tag(version, "awaiting_approval")
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
    from mammo_pipeline.registry.promotion import apply_decision, gate_version

    name = s.registered_model_name
    tags = client.get_model_version(name, version).tags or {}
    before = aliases.get(CHAMPION)
    gated_against = {
        CHAMPION: tags.get("gate_champion_version", "none"),
        BASELINE: tags.get("gate_baseline_version", "none"),
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
    record = review_tags(tags, "approved", actor, at, reason)
    message = f"v{version} approved by {person}"
    if changed:
        policy = GatePolicy(**json.loads(tags["gate_policy"])) if tags.get("gate_policy") else None
        if policy is not None:
            policy = GatePolicy(**{**policy.to_dict(), "require_approval": False})
        decision = gate_version(s, version, policy)
        result = apply_decision(s, version, decision, extra_tags=record)
        message += (
            f"; the references changed since the gate ran ({', '.join(changed)}): re-gated, "
            f"{result.verdict}"
        )
        if result.verdict != "passed":
            message += ": " + "; ".join(result.reasons)
    else:
        mv = client.get_model_version(name, version)
        record[SIGNED_DECISION] = approval_record(
            s, client, name, mv, who=person, at=at, reason=reason, gate="passed"
        )
        plan = Plan.start(
            client, name, f"approval of v{version} by {person}", version, aliases,
            {version: tags},
        )  # fmt: skip
        plan.set_tags(version, record)
        plan.delete_tag(version, "awaiting_approval")
        if before is not None and before != version:
            plan.set_tags(version, {"replaced_champion": before})
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
        plan.set_tags(version, review_tags(mv.tags or {}, "rejected", actor, at, reason))
        plan.delete_tag(version, "awaiting_approval")
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
