"""The registry's own records when MLflow refuses them: nothing is swallowed silently.

A real SQLite MLflow store whose registry tables refuse writes (SQLite triggers that abort
every insert, update and delete: the database itself says no, as a store out of disk or a
read-only user would), and a registry that cannot be read at all (the store's database file is
not a database). Before, ``store.delete_tag`` suppressed every error, ``alias_version`` read
"unreadable" as "no alias", and the deployer's records (``mark_deploy``,
``undo_failed_deploy``) dropped their failures.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError

pytest.importorskip("mlflow")

from mammo_pipeline.registry.deployments import (  # noqa: E402
    alias_version,
    mark_deploy,
    undo_failed_deploy,
)
from mammo_pipeline.registry.store import delete_tag  # noqa: E402

NAME = "records"
REFUSAL = "store refuses writes"
#: The registry tables a deployer's record or an alias move writes to.
_GUARDED = ("model_version_tags", "registered_model_aliases", "registered_model_tags")


def _settings(root: Path, db: str = "mlflow.db") -> Settings:
    return Settings(
        mlflow_tracking_uri=f"sqlite:///{root / db}",
        mlflow_artifact_location=str(root / "art"),
        registered_model_name=NAME,
        data_dir=root / "data",
    )


def _refuse_writes(s: Settings) -> None:
    db = sqlite3.connect(s.mlflow_tracking_uri.removeprefix("sqlite:///"))
    with db:
        for table in _GUARDED:
            for event in ("INSERT", "UPDATE", "DELETE"):
                db.execute(
                    f"CREATE TRIGGER refuse_{event.lower()}_{table} BEFORE {event} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                )
    db.close()


@pytest.fixture
def two_versions(tmp_path: Path) -> Settings:
    """v1 (previous) and v2 (champion), both tagged ``gate=passed``, of a fresh model."""
    s = _settings(tmp_path)
    client = mlflow_client(s)
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, str(tmp_path / "art"))
    for version in ("1", "2"):
        client.set_model_version_tag(NAME, version, "gate", "passed")
    client.set_registered_model_alias(NAME, "previous", "1")
    client.set_registered_model_alias(NAME, "champion", "2")
    return s


def test_delete_tag_ignores_only_not_found(two_versions: Settings) -> None:
    s = two_versions
    client = mlflow_client(s)
    delete_tag(client, NAME, "2", "no_such_tag")  # already gone: fine
    delete_tag(client, NAME, "9", "gate")  # no such version: fine
    _refuse_writes(s)
    with pytest.raises(MammoError, match=rf"could not delete tag 'gate' of '{NAME}' v2.*{REFUSAL}"):
        delete_tag(client, NAME, "2", "gate")
    assert client.get_model_version(NAME, "2").tags["gate"] == "passed"


def test_alias_version_none_only_when_missing(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    # a brand-new store without the model (the demo's serve_champion_if_stopped asks this)
    assert alias_version(s, "champion") is None
    mlflow_client(s).create_registered_model(NAME)
    assert alias_version(s, "champion") is None  # the model exists, the alias does not
    # a registry that cannot be read is not "no champion"
    (tmp_path / "broken.db").write_bytes(b"this is not a database\n" * 64)
    broken = _settings(tmp_path, "broken.db")
    with pytest.raises(MammoError, match=r"cannot read alias 'champion' of 'records'"):
        alias_version(broken, "champion")


def test_deploy_records_report_refused_writes(
    two_versions: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = two_versions
    _refuse_writes(s)
    caplog.set_level(logging.WARNING, logger="mammo_pipeline.registry.deployments")
    problem = mark_deploy(s, "2", "live")
    assert problem is not None and "could not record deploy=live on v2" in problem, problem
    assert REFUSAL in problem
    # a failed deploy of the champion: the tag and the move back to v1 are both refused
    undo = undo_failed_deploy(s, "2", "1", "green never became ready")
    assert undo.moved_to is None
    assert len(undo.problems) == 2, undo.problems
    assert "could not record deploy=failed on v2" in undo.problems[0]
    assert "could not move 'champion' from v2 back to v1" in undo.problems[1]
    assert all(REFUSAL in p for p in undo.problems), undo.problems
    logged = [r.getMessage() for r in caplog.records]
    assert problem in logged and all(p in logged for p in undo.problems), logged
    # nothing moved: the registry still says what it said
    assert alias_version(s, "champion") == "2" and alias_version(s, "previous") == "1"
