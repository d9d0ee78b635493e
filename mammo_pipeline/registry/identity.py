"""Who makes a human decision in the registry, as the platform authenticated them, never a
name typed on a command line.

- In Airflow (the approval in ``mammo_retrain``, a manual ``mammo_deploy``): the Airflow user
  who answered or triggered (``source="airflow"``), passed in by the DAG task.
- On the CLI with MLflow authentication on (``MAMMO_MLFLOW_TRACKING_USERNAME``, the compose
  shape): the MLflow user whose credentials make the writes (``source="mlflow"``).
- In the embedded default: the operating-system user running the command (``source="os"``).
- The platform itself (the deployer rolling back a failed deploy, an approval that timed
  out): ``source="system"``.

The record on the version names both (``review_by``, ``review_by_source``). With
``MAMMO_APPROVERS`` set, only those people may approve, reject, roll back or pin, whatever
the source (the platform's own actions excepted).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Literal

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError

Source = Literal["airflow", "mlflow", "os", "system"]


@dataclass(frozen=True)
class Identity:
    name: str
    source: Source

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise MammoError(f"an identity needs a name (source {self.source})")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source} user)" if self.source != "system" else self.name


#: The deployer moving the champion back after a failed deploy.
DEPLOYER = Identity("mammo-deploy", "system")


def cli_identity(settings: Settings) -> Identity:
    """The authenticated user of a CLI command: the MLflow user when the registry is an MLflow
    server with authentication (credentials set), else the operating-system user."""
    user = settings.mlflow_tracking_username or os.environ.get("MLFLOW_TRACKING_USERNAME")
    remote = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    if user and user.strip() and remote:  # the server authenticates it on every write
        return Identity(user.strip(), "mlflow")
    try:
        return Identity(getpass.getuser(), "os")
    except (KeyError, OSError) as exc:  # no passwd entry in some containers
        raise MammoError(
            "cannot tell who is acting: the OS user has no name here; run with a named user "
            "or with MLflow authentication on (MAMMO_MLFLOW_TRACKING_USERNAME)"
        ) from exc


def acting(settings: Settings, who: Identity | None, action: str) -> Identity:
    """The identity of a human decision (``who`` from Airflow, else the CLI's), checked
    against ``MAMMO_APPROVERS``."""
    actor = who if who is not None else cli_identity(settings)
    allowed = settings.approvers
    if allowed and actor.source != "system" and actor.name not in allowed:
        raise MammoError(
            f"{actor.label} may not {action}: MAMMO_APPROVERS allows only {', '.join(allowed)}"
        )
    return actor
