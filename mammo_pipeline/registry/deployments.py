"""What the deployer records in the registry: ``deploy=live``/``failed`` tags on a version, and
the champion alias moved back when the version it points at failed to deploy (under the
registry lock, which first completes any registry action a killed process left half-written)."""

from __future__ import annotations

import contextlib
import datetime as dt

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.registry.names import CHAMPION, PREVIOUS
from mammo_pipeline.registry.store import set_tags


def alias_version(settings: Settings, alias: str) -> str | None:
    """The version ``alias`` points at, or None (missing alias or model)."""
    try:
        mv = mlflow_client(settings).get_model_version_by_alias(
            settings.registered_model_name, alias
        )
        return str(mv.version)
    except Exception:  # noqa: BLE001 - a missing alias is simply None
        return None


def mark_deploy(settings: Settings, version: str, status: str, reason: str | None = None) -> None:
    """Tag ``version`` with the outcome of a deploy (best effort: the service state is the
    truth, the tags are the record)."""
    tags = {"deploy": status, "deploy_at": dt.datetime.now(dt.UTC).isoformat()}
    if reason:
        tags["deploy_reason"] = reason
    with contextlib.suppress(Exception):
        set_tags(mlflow_client(settings), settings.registered_model_name, version, tags)


def undo_failed_deploy(
    settings: Settings, failed: str, restore_to: str | None, reason: str
) -> str | None:
    """Tag ``failed`` as a failed deploy; when ``champion`` points at it, move the alias back
    to ``restore_to``. Returns the version the alias now points at if it was moved.

    The aliases are read and moved under the registry lock: a promotion interrupted between
    its ``champion`` and ``previous`` writes is completed first, so the choice below is made
    on the state that promotion left, not on a half-written one."""
    from mammo_pipeline.registry.lock import registry_lock

    mark_deploy(settings, failed, "failed", reason[:4000])
    if not restore_to or restore_to == failed:
        return None
    try:
        with registry_lock(settings):
            if alias_version(settings, CHAMPION) != failed:
                return None
            if alias_version(settings, PREVIOUS) == restore_to:
                # The usual case (the gate just promoted ``failed``): the registry's own
                # rollback also moves ``previous`` one step back and records who/when/why.
                from mammo_pipeline.registry.identity import DEPLOYER
                from mammo_pipeline.registry.rollbacks import rollback

                rollback(settings, reason=f"deploy failed: {reason[:500]}", who=DEPLOYER)
            else:  # one write: atomic, nothing to journal
                mlflow_client(settings).set_registered_model_alias(
                    settings.registered_model_name, CHAMPION, restore_to
                )
    except Exception:  # noqa: BLE001 - reported, the old service keeps serving regardless
        return None
    with contextlib.suppress(Exception):
        set_tags(
            mlflow_client(settings),
            settings.registered_model_name,
            failed,
            {"deploy_rolled_back_to": restore_to},
        )
    return restore_to
