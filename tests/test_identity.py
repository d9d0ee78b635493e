"""Who a registry decision is recorded under (registry/identity.py): the authenticated
identity, never free text; MAMMO_APPROVERS accepts a plain name and is enforced (#18 item 5)."""

from __future__ import annotations

import getpass

import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.identity import DEPLOYER, Identity, acting, cli_identity


def test_the_cli_identity_is_the_os_user_unless_an_mlflow_server_authenticates() -> None:
    assert cli_identity(Settings()) == Identity(getpass.getuser(), "os")
    # a user name beside a local SQLite store authenticates nothing: still the OS user
    login = {"mlflow_tracking_username": "ml-alice", "mlflow_tracking_password": "pw"}
    assert cli_identity(Settings(**login)).source == "os"
    remote = Settings(mlflow_tracking_uri="http://mlflow:5000", **login)
    assert cli_identity(remote) == Identity("ml-alice", "mlflow")


def test_approvers_are_plain_names_and_enforced_for_people_only() -> None:
    assert Settings(approvers="alice").approvers == ("alice",)
    assert Settings(approvers="alice, bob").approvers == ("alice", "bob")
    assert Settings(approvers='["alice"]').approvers == ("alice",)
    s = Settings(approvers="alice")
    assert acting(s, Identity("alice", "airflow"), "approve a version").name == "alice"
    with pytest.raises(MammoError, match=r"mallory \(airflow user\) may not approve"):
        acting(s, Identity("mallory", "airflow"), "approve a version")
    assert acting(s, DEPLOYER, "roll back the champion") is DEPLOYER  # the platform's own
    with pytest.raises(MammoError, match="needs a name"):
        Identity(" ", "os")


def test_approvers_from_the_environment_do_not_crash(monkeypatch) -> None:
    monkeypatch.setenv("MAMMO_APPROVERS", "alice")
    assert Settings().approvers == ("alice",)  # was a pydantic JSON traceback
