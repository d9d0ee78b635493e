"""The local deployment's state file (``<data_dir>/serving/live.json``: which backend serves
the live port, and the proxy) and the lock that serialises deploys."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
