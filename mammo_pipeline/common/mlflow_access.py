"""The one way to reach MLflow: a client factory taking the settings, and the one documented
place that changes MLflow's process-wide state.

* :func:`mlflow_client` is what library code uses: an explicit client on the configured
  tracking and registry store (a relative SQLite path made absolute, so that a child process
  started elsewhere reaches the same file).
* :func:`use_store` points MLflow's *fluent* API (``mlflow.start_run``,
  ``mlflow.keras.log_model``/``load_model`` on ``models:/`` URIs) at that store. It is the only
  function in the library that calls ``mlflow.set_tracking_uri``/``set_registry_uri``; the
  training run and the model loaders call it because the fluent API has no client argument.
* :func:`configure_mlflow` does that and makes the configured experiment the active one.
* :func:`quiet_artifact_downloads` is the only place that writes an MLflow environment
  variable (its progress bar has no other switch).

Nothing happens at import time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mammo_pipeline.config import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

_SQLITE = "sqlite:///"


def store_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (other URIs unchanged)."""
    if uri.startswith(_SQLITE) and not uri[len(_SQLITE) :].startswith("/"):
        return _SQLITE + str(Path(uri[len(_SQLITE) :]).resolve())
    return uri


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def describe_store(settings: Settings) -> str:
    """Where the tracking/registry store is, in words for a person (CLI output)."""
    uri = store_uri(settings.mlflow_tracking_uri)
    if uri.startswith(_SQLITE):
        return f"SQLite file {uri[len(_SQLITE) :]}"
    return uri


def store_exists(settings: Settings) -> bool:
    """False only for a local SQLite store whose file does not exist yet (read-only commands
    must not create one as a side effect)."""
    uri = store_uri(settings.mlflow_tracking_uri)
    if uri.startswith(_SQLITE):
        return Path(uri[len(_SQLITE) :]).is_file()
    return True


def mlflow_client(settings: Settings) -> MlflowClient:
    """An MlflowClient on the configured tracking and registry store (no global state)."""
    from mlflow import MlflowClient

    uri = store_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_store(settings: Settings) -> str:
    """Point MLflow's fluent API (process-wide) at the configured store; returns the URI.

    Idempotent. Also needed by the registry (see
    :func:`mammo_pipeline.common.compat.registry_resolves_models_uri_globally`).
    """
    import mlflow

    uri = store_uri(settings.mlflow_tracking_uri)
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    with contextlib.suppress(Exception):
        if mlflow.get_registry_uri() != uri:
            mlflow.set_registry_uri(uri)
    return uri


def artifact_root_uri(location: str) -> str:
    """A local path becomes an absolute ``file://`` URI; URIs (s3://, mlflow-artifacts:/) pass."""
    if not location or "://" in location or location.startswith("mlflow-artifacts:"):
        return location
    return Path(location).expanduser().resolve().as_uri()


def ensure_experiment(settings: Settings) -> str:
    """The id of the configured experiment, created (with the artifact location) if missing.
    A remote server's own artifact proxy is respected when the location is left empty."""
    client = mlflow_client(settings)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    if exp is not None:
        return str(exp.experiment_id)
    location = (
        None
        if is_remote(settings.mlflow_tracking_uri) and not settings.mlflow_artifact_location
        else artifact_root_uri(settings.mlflow_artifact_location)
    )
    return str(client.create_experiment(settings.mlflow_experiment, artifact_location=location))


def configure_mlflow(settings: Settings) -> str:
    """For fluent tracking code (a training run, tests, benchmarks): :func:`use_store`, the
    configured experiment created if missing and made the active one. Returns its id."""
    import mlflow

    use_store(settings)
    experiment_id = ensure_experiment(settings)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextlib.contextmanager
def quiet_artifact_downloads() -> Iterator[None]:
    """MLflow draws a progress bar per artifact download on stderr; not wanted in CLI output
    or reports. Its only switch is an environment variable, set here for the block."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def git_commit(default: str = "unknown") -> str:
    """The current git commit of the code, or ``default`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or default
    except (OSError, subprocess.SubprocessError):
        return default
