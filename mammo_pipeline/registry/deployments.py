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


def record_outcome(
    settings: Settings, version: str, ok: bool, message: str, restore_to: str | None
) -> str | None:
    """Record a deploy made by a deployer that could not write to the registry (a serving
    host with a read-only MLflow user, ``deploy_records_registry`` false): ``deploy=live``,
    or ``deploy=failed`` and the champion moved back to ``restore_to`` when it still points
    at ``version``. Runs on a writer (the DAGs' ``record_deploy`` task). Unlike the deployer's
    own best-effort records, a write that fails raises: the task shows it."""
    from mammo_pipeline.errors import MammoError

    stamp = {"deploy": "live" if ok else "failed", "deploy_at": dt.datetime.now(dt.UTC).isoformat()}
    if not ok:
        stamp["deploy_reason"] = message[:4000]
    try:
        set_tags(mlflow_client(settings), settings.registered_model_name, version, stamp)
    except Exception as exc:  # noqa: BLE001 - reported to the task, with what failed
        raise MammoError(f"could not record the deploy of v{version}: {exc}") from exc
    if ok:
        return None
    moved = undo_failed_deploy(settings, version, restore_to, message)
    if moved is None and alias_version(settings, CHAMPION) == version and restore_to:
        raise MammoError(
            f"v{version} failed to deploy and is still the champion: moving it back to "
            f"v{restore_to} failed; run `mammo registry rollback --reason ...`"
        )
    return moved
