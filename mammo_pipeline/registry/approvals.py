"""The approvals the DAGs and the CLI share, so that both make a version the champion by the
same rules (``orchestration/`` holds none of them):

* :func:`approve_awaiting`: a person's answer to "approve this candidate?" (the approval task
  of ``mammo_retrain``) promotes only a version that still awaits approval;
* :func:`champion_for_deploy`: serving a chosen version (``mammo deploy --version V``, a
  manual ``mammo_deploy`` run with a version) makes it the champion first, by the acting
  person's recorded approval, and only when it is vetted.
"""

from __future__ import annotations

from collections.abc import Mapping

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.identity import Identity
from mammo_pipeline.registry.lock import registry_lock
from mammo_pipeline.registry.names import CHAMPION
from mammo_pipeline.registry.review import ReviewResult, approve
from mammo_pipeline.registry.store import get_version, mlflow_errors, read_aliases
from mammo_pipeline.registry.vetting import vetting_problem


def no_longer_awaiting(version: str, tags: Mapping[str, str]) -> str | None:
    """Why an answer to the approval request may not promote ``version`` now (None: it may):
    it was rejected since, or it no longer is a passed version awaiting approval."""
    if tags.get("review") == "rejected":
        return (
            f"v{version} was rejected by {tags.get('review_by', '?')} "
            f"({tags.get('review_reason', '')}) since the gate ran"
        )
    if tags.get("gate") != "passed" or tags.get("awaiting_approval") != "true":
        return (
            f"v{version} no longer awaits approval (gate={tags.get('gate', 'none')}, "
            f"awaiting_approval={tags.get('awaiting_approval', 'false')})"
        )
    return None


def approve_awaiting(settings: Settings, version: str, reason: str, who: Identity) -> ReviewResult:
    """``who``'s answer to the approval request of ``version``, under the registry lock:
    refused (:class:`MammoError`, nothing recorded) when the version no longer awaits it,
    else :func:`~.review.approve` (which re-gates when the references changed)."""
    name = settings.registered_model_name
    with registry_lock(settings), mlflow_errors(f"approving version {version}"):
        mv = get_version(mlflow_client(settings), name, version)
        problem = no_longer_awaiting(version, mv.tags or {})
        if problem:
            raise MammoError(f"{who.name}'s approval cannot promote it: {problem}")
        return approve(settings, version, reason=reason, who=who)


def champion_for_deploy(
    settings: Settings,
    version: str,
    reason: str,
    who: Identity | None,
    *,
    need_named: str | None = None,
) -> ReviewResult | None:
    """Make the vetted ``version`` the champion before it is deployed, by ``who``'s recorded
    approval (None: the CLI's authenticated user); None when it already is the champion.
    Raises :class:`MammoError` for an unvetted version, when the approval does not promote
    it, or (``need_named``: why there is nobody to record) when an approval is needed but
    ``who`` is None."""
    name = settings.registered_model_name
    client = mlflow_client(settings)
    with registry_lock(settings), mlflow_errors(f"deploying {name!r} v{version}"):
        mv = get_version(client, name, version)
        problem = vetting_problem(version, mv.tags or {})
        if problem:
            raise MammoError(f"refusing to deploy: {problem}")
        if read_aliases(client, name).get(CHAMPION) == version:
            return None
        if who is None and need_named:
            raise MammoError(
                f"v{version} is not the champion and {need_named} to record an approval: run "
                f"`mammo registry approve {version} --reason TEXT`, then deploy the champion"
            )
        result = approve(settings, version, reason=reason, who=who)
    if result.champion_after != version:
        raise MammoError(f"v{version} was not promoted: {result.message}")
    return result
