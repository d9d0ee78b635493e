"""Rolling the champion back to ``previous`` (``mammo registry rollback``, the deployer after a
failed deploy, ``mammo_deploy action=rollback``): one journaled action that moves ``champion``
and ``previous`` one step back through the champion history and records who, when and why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.decision import utc_now
from mammo_pipeline.registry.identity import Identity, acting
from mammo_pipeline.registry.journal import Plan
from mammo_pipeline.registry.lock import registry_lock
from mammo_pipeline.registry.names import CHAMPION, PREVIOUS, Review, Tag
from mammo_pipeline.registry.report import write_report_safely
from mammo_pipeline.registry.review import ReviewResult, review_tags
from mammo_pipeline.registry.state import VersionState
from mammo_pipeline.registry.store import get_version, is_not_found, mlflow_errors, read_aliases

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def rollback(
    settings: Settings | None, reason: str | None = None, who: Identity | None = None
) -> ReviewResult:
    """Champion back to ``previous``. The new ``previous`` is the champion that one replaced
    (its ``replaced_champion`` tag), so repeated rollbacks walk back the history."""
    s = settings or get_settings()
    name = s.registered_model_name
    reason = (reason or "").strip() or "rollback"
    actor = acting(s, who, "roll back the champion")
    person = actor.name
    at = utc_now()
    client = mlflow_client(s)
    with registry_lock(s), mlflow_errors(f"rolling back {name!r}"):
        aliases = read_aliases(client, name)
        current, target = aliases.get(CHAMPION), aliases.get(PREVIOUS)
        if current is None:
            raise MammoError(f"{name!r} has no champion: nothing to roll back")
        if target is None or target == current:
            raise MammoError(
                f"{name!r} has no 'previous' version to roll back to (champion is v{current})"
            )
        target_mv = get_version(client, name, target)
        target_state = VersionState.of(target, target_mv.tags or {})
        if target_state.rejected:
            raise MammoError(f"previous version v{target} was rejected; approve another version")
        problem = target_state.vetting_problem()
        if problem:
            raise MammoError(f"cannot roll back to v{target}: {problem}")
        current_mv = get_version(client, name, current)
        new_previous = _rollback_target_of(client, name, target_mv, exclude={current, target})
        plan = Plan.start(
            client, name, f"rollback v{current} -> v{target} by {person}", current, aliases,
            {current: current_mv.tags or {}, target: target_mv.tags or {}},
        )  # fmt: skip
        plan.set_tags(
            current, review_tags(current_mv.tags or {}, Review.ROLLED_BACK, actor, at, reason)
        )
        plan.set_tags(
            target,
            {Tag.REINSTATED_BY: person, Tag.REINSTATED_AT: at, Tag.REINSTATED_REASON: reason},
        )
        # Aliases last (the journal's order): champion first, then previous.
        plan.set_alias(CHAMPION, target)
        if new_previous is not None:
            plan.set_alias(PREVIOUS, new_previous)
        else:
            plan.delete_alias(PREVIOUS)
        plan.commit(between=lambda: write_report_safely(client, s, current, None, []))
        after = read_aliases(client, name)
    return ReviewResult.of(
        "rollback",
        name,
        target,
        person,
        at,
        reason,
        current,
        after,
        message=f"champion v{current} -> v{target}",
    )


def _rollback_target_of(
    client: MlflowClient, name: str, mv: ModelVersion, exclude: set[str]
) -> str | None:
    candidate = VersionState.of(str(mv.version), mv.tags or {}).replaced_champion
    if not candidate or candidate in exclude:
        return None
    from mlflow.exceptions import MlflowException

    try:
        prior = client.get_model_version(name, candidate)
    except MlflowException as exc:  # a deleted version is no target; anything else is raised
        if is_not_found(exc):
            return None
        raise
    if VersionState.of(candidate, prior.tags or {}).rejected:
        return None
    return candidate
