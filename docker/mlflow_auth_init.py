"""Create the MLflow users of mammo-mlops and their permissions on a basic-auth server.

Run once the MLflow tracking server (``mlflow server --app-name basic-auth``) answers, as its
admin (MLflow's own ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, the values
of ``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` the server was started
with). The compose stack runs it in the one-shot ``mlflow-init`` service and
``tests/test_distributed.py`` runs the same file against its own server.

Users (names and passwords from the environment, i.e. ``.env``):

- ``MLFLOW_WRITER_USER`` / ``MLFLOW_WRITER_PASSWORD``: the Airflow workers (train, register,
  gate, promote): MANAGE on every experiment and every registered model;
- ``MLFLOW_SERVING_USER`` / ``MLFLOW_SERVING_PASSWORD``: the serving host (loads the
  champion): READ on every experiment (the runs' artifacts) and on the registered model, so
  it can neither move an alias nor write a tag;
- ``MLFLOW_REVIEWER_USER`` / ``MLFLOW_REVIEWER_PASSWORD``: people (approve, reject, roll
  back, pin): READ on every experiment, MANAGE on the registered model (aliases and tags;
  deleting an alias needs MANAGE in MLflow).

The server runs with ``default_permission = NO_PERMISSIONS``: a user reads only what is
granted here. MLflow lets any authenticated user create new experiments and models (it then
owns them); that cannot touch what is served.

The registered model (``MAMMO_REGISTERED_MODEL_NAME``) is created here by the admin when it
does not exist, so that no other user can claim it by creating it first (MLflow gives the
creator of a resource MANAGE on it). Re-running is safe: existing users get the password
from the environment (rotation), and each grant is set to the level above.

Exit status 0 on success; otherwise one line on stderr naming what failed.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

WRITER, SERVING, REVIEWER = "writer", "serving", "reviewer"
MIN_PASSWORD = 12  # MLflow's own rule (mlflow.utils.validation._validate_password)


@dataclass(frozen=True)
class Grant:
    resource_type: str  # "experiment" or "registered_model"
    pattern: str  # a name/id, or "*" for every resource of the type
    permission: str  # READ, EDIT or MANAGE


def grants(role: str, model_name: str) -> list[Grant]:
    """What each role may do (module docstring)."""
    return {
        WRITER: [Grant("experiment", "*", "MANAGE"), Grant("registered_model", "*", "MANAGE")],
        SERVING: [Grant("experiment", "*", "READ"), Grant("registered_model", model_name, "READ")],
        REVIEWER: [
            Grant("experiment", "*", "READ"),
            Grant("registered_model", model_name, "MANAGE"),
        ],
    }[role]


class InitError(Exception):
    """A problem with the configuration or the server, for one line on stderr."""


def _required(env: dict[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise InitError(f"{name} is not set (see .env.example)")
    return value


def users_from_env(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{role: (username, password)}`` from ``MLFLOW_<ROLE>_USER`` / ``..._PASSWORD``."""
    users: dict[str, tuple[str, str]] = {}
    for role in (WRITER, SERVING, REVIEWER):
        prefix = f"MLFLOW_{role.upper()}"
        name, password = _required(env, f"{prefix}_USER"), _required(env, f"{prefix}_PASSWORD")
        if len(password) < MIN_PASSWORD:
            raise InitError(f"{prefix}_PASSWORD is shorter than {MIN_PASSWORD} characters")
        if password.startswith("change-me"):
            raise InitError(f"{prefix}_PASSWORD is still the placeholder of .env.example")
        users[role] = (name, password)
    names = [u for u, _ in users.values()]
    admin = env.get("MLFLOW_TRACKING_USERNAME", "")
    if len(set(names)) != len(names) or admin in names:
        raise InitError("the admin, writer, serving and reviewer MLflow users must be distinct")
    return users


def wait_for_server(tracking_uri: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{tracking_uri}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1.0)
    raise InitError(f"MLflow server at {tracking_uri} did not answer within {timeout:.0f}s: {last}")


def _code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def ensure_user(auth, username: str, password: str) -> str:
    """Create ``username`` or set its password; returns "created" or "updated"."""
    from mlflow.exceptions import MlflowException

    try:
        auth.create_user(username, password)
        return "created"
    except MlflowException as exc:
        if _code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
    auth.update_user_password(username, password)
    return "updated"


def ensure_grant(auth, username: str, grant: Grant) -> None:
    """Set ``username``'s permission on ``grant``'s resources to exactly ``grant.permission``."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, grant.resource_type, grant.pattern, grant.permission)
        return
    except MlflowException as exc:
        if _code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
    auth.revoke_user_permission(username, grant.resource_type, grant.pattern)
    auth.grant_user_permission(username, grant.resource_type, grant.pattern, grant.permission)


def ensure_registered_model(tracking_uri: str, name: str) -> bool:
    """Create the registered model as the admin when missing; True when created."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.create_registered_model(
            name, description="mammo-mlops lesion classifier (created by mlflow_auth_init)"
        )
        return True
    except MlflowException as exc:
        if _code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
        return False


def init(env: dict[str, str]) -> list[str]:
    """Users, grants and the registered model; returns what was done, one line each."""
    from mlflow.server import get_app_client

    tracking_uri = _required(env, "MLFLOW_TRACKING_URI").rstrip("/")
    _required(env, "MLFLOW_TRACKING_USERNAME")
    if _required(env, "MLFLOW_TRACKING_PASSWORD").startswith("change-me"):
        raise InitError("the MLflow admin password is still the placeholder of .env.example")
    model_name = _required(env, "MAMMO_REGISTERED_MODEL_NAME")
    users = users_from_env(env)
    wait_for_server(tracking_uri)
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    done = []
    if ensure_registered_model(tracking_uri, model_name):
        done.append(f"registered model {model_name!r} created")
    for role, (username, password) in users.items():
        done.append(f"{role} user {username!r} {ensure_user(auth, username, password)}")
        for grant in grants(role, model_name):
            ensure_grant(auth, username, grant)
            done.append(f"  {grant.permission} on {grant.resource_type} {grant.pattern!r}")
    return done


def main() -> int:
    try:
        for line in init(dict(os.environ)):
            print(line, flush=True)
    except InitError as exc:
        print(f"mlflow_auth_init: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the server's answer, in one line
        message = " ".join(str(exc).split())[:500]
        print(f"mlflow_auth_init: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
