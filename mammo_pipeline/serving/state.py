"""The local deployment's state file (``<data_dir>/serving/live.json``: which backend serves
the live port, the proxy, and which registry it was deployed from) and the lock that
serialises deploys."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mammo_pipeline.common.mlflow_access import store_uri
from mammo_pipeline.common.processes import is_alive
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError

STATE_FILE = "live.json"


class DeployError(MammoError):
    """A deployment step failed (the message says which and why)."""


def state_path(settings: Settings) -> Path:
    return settings.serving_dir / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any]:
    """The deployment state (``{}`` when nothing was deployed)."""
    try:
        return json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {}


def registry_identity(settings: Settings) -> dict[str, str]:
    """Which registry a deployment serves from: the model name and a digest of the store URI
    (a digest, so that a password in a PostgreSQL URI never lands in the state file)."""
    uri = store_uri(settings.mlflow_tracking_uri)
    return {
        "model": settings.registered_model_name,
        "store": hashlib.sha256(uri.encode()).hexdigest()[:16],
    }


def live_backend(settings: Settings) -> dict[str, Any] | None:
    """The backend serving the live port on this machine (its state entry), or None when
    nothing is deployed here or its process is gone. Reads only; creates nothing."""
    backend = read_state(settings).get("backend") or {}
    return backend if backend.get("version") and is_alive(backend.get("pid")) else None


def write_state(settings: Settings, state: dict[str, Any]) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def deploy_lock(settings: Settings) -> Iterator[None]:
    settings.serving_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.serving_dir / "deploy.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeployError("another deploy is running (lock held)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
