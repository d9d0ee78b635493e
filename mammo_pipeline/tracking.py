"""MLflow connection helpers: the one place that points MLflow at the configured store.

Nothing happens at import time; call :func:`configure_mlflow` (idempotent) before tracking.
Works with a local SQLite store (the default) and a remote tracking server alike: the
artifact location is only used when the experiment is created, and a remote server's own
artifact proxy is respected when the location is left empty.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mammo_pipeline.config import Settings, get_settings


def artifact_root_uri(location: str) -> str:
    """A local path becomes an absolute ``file://`` URI; URIs (s3://, mlflow-artifacts:/) pass."""
    if not location or "://" in location or location.startswith("mlflow-artifacts:"):
        return location
    return Path(location).expanduser().resolve().as_uri()


def configure_mlflow(settings: Settings | None = None) -> str:
    """Point MLflow at the configured tracking URI and experiment; returns the experiment id."""
    import mlflow

    s = settings or get_settings()
    uri = s.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(s.mlflow_experiment)
    if exp is None:
        remote = uri.startswith(("http://", "https://"))
        location = (
            None
            if remote and not s.mlflow_artifact_location
            else artifact_root_uri(s.mlflow_artifact_location)
        )
        exp_id = client.create_experiment(s.mlflow_experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


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
