"""The approvals the DAGs and the CLI share, so that both make a version the champion by the
same rules (``orchestration/`` holds none of them):

* :func:`approve_awaiting`: a person's answer to "approve this candidate?" (the approval task
  of ``mammo_retrain``) promotes only a version that still awaits approval;
* :func:`champion_for_deploy`: serving a chosen version (``mammo deploy --version V``, a
  manual ``mammo_deploy`` run with a version) makes it the champion first, by the acting
  person's recorded approval, and only when it is vetted.
"""

from __future__ import annotations

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.identity import Identity
from mammo_pipeline.registry.lock import registry_lock
from mammo_pipeline.registry.review import ReviewResult, approve
from mammo_pipeline.registry.state import VersionState, version_state
from mammo_pipeline.registry.store import get_version, mlflow_errors


def approve_awaiting(settings: Settings, version: str, reason: str, who: Identity) -> ReviewResult:
    """``who``'s answer to the approval request of ``version``, under the registry lock:
    refused (:class:`MammoError`, nothing recorded) when the version no longer awaits it,
    else :func:`~.review.approve` (which re-gates when the references changed)."""
    name = settings.registered_model_name
    with registry_lock(settings), mlflow_errors(f"approving version {version}"):
        mv = get_version(mlflow_client(settings), name, version)
        problem = VersionState.of(version, mv.tags or {}).awaiting_problem()
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
        state = version_state(settings, client, version)
        problem = state.vetting_problem()
        if problem:
            raise MammoError(f"refusing to deploy: {problem}")
        if state.champion:
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
