"""The one settings-to-environment function: how the settings travel to child processes
(Airflow tasks, BentoML backends, the proxy, the demo's services).

Every settings field becomes ``MAMMO_<FIELD>``; relative paths and SQLite URIs are made
absolute (children may start in another directory); a field that is unset removes any
``MAMMO_<FIELD>`` inherited from the parent, so a child never sees a value the parent's
settings did not have. ``BENTOML_HOME`` (BentoML's own variable) follows
``settings.bentoml_store`` and the repository root is put on ``PYTHONPATH`` (the service
module ``serving/`` and the DAGs import from it). MLflow credentials in the settings are also
handed over as MLflow's own ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, which
MLflow's client reads in the child (without them, inherited values pass through unchanged).
The caller's environment is not changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from mammo_pipeline.common.mlflow_access import artifact_root_uri, store_uri
from mammo_pipeline.config import CONFIG_FILE_ENV, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _text(value: object) -> str:
    if isinstance(value, tuple | list):  # paths inside (trusted keys) made absolute too
        return json.dumps([_text(v) if isinstance(v, Path) else v for v in value])
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    return str(value)


def settings_env(
    settings: Settings, base: Mapping[str, str] | None = None, **extra: str
) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus the settings as ``MAMMO_*`` variables."""
    env = dict(os.environ if base is None else base)
    dumped = settings.model_dump()
    for name, value in dumped.items():
        key = f"MAMMO_{name.upper()}"
        if value is None:
            env.pop(key, None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if name == "mlflow_tracking_uri":
            value = store_uri(str(value))
        elif name == "mlflow_artifact_location" and value and "://" not in str(value):
            value = artifact_root_uri(str(value))
        env[key] = _text(value)
    # The file's values are all in the variables above; a child must not re-read a relative
    # path from another directory.
    env.pop(CONFIG_FILE_ENV, None)
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        env["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
        env["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_tracking_password.get_secret_value()
    env["BENTOML_HOME"] = str(settings.bentoml_store.resolve())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env
