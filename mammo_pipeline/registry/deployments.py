"""What the deployer records in the registry: ``deploy=live``/``failed`` tags on a version, and
the champion alias moved back when the version it points at failed to deploy (under the
registry lock, which first completes any registry action a killed process left half-written).

The service state is the truth and the tags are the record, so the deployer goes on when a
record cannot be written, but never silently: every failed write is logged as a warning and
returned, in words, for the deploy's result (:class:`DeployUndo`, :func:`mark_deploy`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.names import CHAMPION, PREVIOUS, Deployed, Tag
from mammo_pipeline.registry.store import is_not_found, set_tags

log = logging.getLogger(__name__)


def _why(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, MammoError) else f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0] if text else type(exc).__name__


def alias_version(settings: Settings, alias: str) -> str | None:
    """The version ``alias`` points at; None when the alias (or the model) does not exist.
    Raises :class:`MammoError` when the registry cannot be read (not the same as "none")."""
    try:
        mv = mlflow_client(settings).get_model_version_by_alias(
            settings.registered_model_name, alias
        )
    except Exception as exc:  # noqa: BLE001 - sorted below: missing vs unreadable
        if is_not_found(exc):
            return None
        raise MammoError(
            f"cannot read alias {alias!r} of {settings.registered_model_name!r}: {_why(exc)}"
        ) from exc
    return str(mv.version)


def mark_deploy(
    settings: Settings, version: str, status: str, reason: str | None = None
) -> str | None:
    """Tag ``version`` with the outcome of a deploy. Returns None when recorded, else why not
    (also logged as a warning): the deploy stands either way, its result says so."""
    tags = {Tag.DEPLOY: status, Tag.DEPLOY_AT: dt.datetime.now(dt.UTC).isoformat()}
    if reason:
        tags[Tag.DEPLOY_REASON] = reason
    try:
        set_tags(mlflow_client(settings), settings.registered_model_name, version, tags)
    except Exception as exc:  # noqa: BLE001 - reported to the caller, with the reason
        problem = f"could not record deploy={status} on v{version}: {_why(exc)}"
        log.warning(problem)
        return problem
    return None


@dataclass
class DeployUndo:
    """What :func:`undo_failed_deploy` did: where ``champion`` was moved (None: not moved)
    and every registry write that failed, in words."""

    moved_to: str | None = None
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        log.warning(text)
        self.problems.append(text)


def undo_failed_deploy(
    settings: Settings, failed: str, restore_to: str | None, reason: str
) -> DeployUndo:
    """Tag ``failed`` as a failed deploy; when ``champion`` points at it, move the alias back
    to ``restore_to``. Failures are returned (and logged), never raised: the old service keeps
    serving regardless.

    The aliases are read and moved under the registry lock: a promotion interrupted between
    its ``champion`` and ``previous`` writes is completed first, so the choice below is made
    on the state that promotion left, not on a half-written one."""
    from mammo_pipeline.registry.lock import registry_lock

    out = DeployUndo()
    marked = mark_deploy(settings, failed, Deployed.FAILED, reason[:4000])
    if marked:
        out.problems.append(marked)
    if not restore_to or restore_to == failed:
        return out
    try:
        with registry_lock(settings):
            if alias_version(settings, CHAMPION) != failed:
                return out
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
    except Exception as exc:  # noqa: BLE001 - reported, the old service keeps serving
        out.problem(f"could not move 'champion' from v{failed} back to v{restore_to}: {_why(exc)}")
        return out
    out.moved_to = restore_to
    try:
        set_tags(
            mlflow_client(settings),
            settings.registered_model_name,
            failed,
            {Tag.DEPLOY_ROLLED_BACK_TO: restore_to},
        )
    except Exception as exc:  # noqa: BLE001 - the alias moved; only the note is missing
        out.problem(f"champion moved back to v{restore_to}, but tagging v{failed}: {_why(exc)}")
    return out


def record_outcome(
    settings: Settings, version: str, ok: bool, message: str, restore_to: str | None
) -> str | None:
    """Record a deploy made by a deployer that could not write to the registry (a serving
    host with a read-only MLflow user, ``deploy_records_registry`` false): ``deploy=live``,
    or ``deploy=failed`` and the champion moved back to ``restore_to`` when it still points
    at ``version``. Runs on a writer (the DAGs' ``record_deploy`` task). Unlike the deployer's
    own records, a write that fails raises: the task shows it."""
    stamp = {
        Tag.DEPLOY: Deployed.LIVE if ok else Deployed.FAILED,
        Tag.DEPLOY_AT: dt.datetime.now(dt.UTC).isoformat(),
    }
    if not ok:
        stamp[Tag.DEPLOY_REASON] = message[:4000]
    try:
        set_tags(mlflow_client(settings), settings.registered_model_name, version, stamp)
    except Exception as exc:  # noqa: BLE001 - reported to the task, with what failed
        raise MammoError(f"could not record the deploy of v{version}: {_why(exc)}") from exc
    if ok:
        return None
    undo = undo_failed_deploy(settings, version, restore_to, message)
    if undo.moved_to is None and alias_version(settings, CHAMPION) == version and restore_to:
        raise MammoError(
            f"v{version} failed to deploy and is still the champion: moving it back to "
            f"v{restore_to} failed ({'; '.join(undo.problems) or 'no reason recorded'}); run "
            "`mammo registry rollback --reason ...`"
        )
    return undo.moved_to
