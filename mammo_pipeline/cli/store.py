"""The settings for a command that needs an existing MLflow registry.

A local SQLite store that does not exist is an error naming the file and how to point at
the demo's, raised before anything is created: read-only commands (``registry list``,
``show``...) and the commands that would otherwise make an empty store and state files on
the way to failing (``serve``, ``deploy``) all ask here first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mammo_pipeline.config import Settings

#: How to point the command at the demo's registry (printed with the error).
DEMO_HINT = "after `make demo`, run `source .demo/env` first"


def existing_store_settings() -> Settings:
    """The settings, refusing to create a registry as a side effect."""
    from mammo_pipeline.common.mlflow_access import describe_store, store_exists
    from mammo_pipeline.config import CONFIG_FILE_ENV, get_settings
    from mammo_pipeline.errors import ConfigError

    s = get_settings()
    if not store_exists(s):
        raise ConfigError(
            f"no MLflow registry at {describe_store(s)} (nothing was created). Set "
            f"MAMMO_MLFLOW_TRACKING_URI or {CONFIG_FILE_ENV}; {DEMO_HINT}"
        )
    return s
