"""How one run may change the deployment's settings (Airflow trigger Params, ``mammo train``
options): a named set of fields, validated by the same :class:`Settings` rules as everything
else, so a value is range-checked once, in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mammo_pipeline.config import Settings, describe_validation_error
from mammo_pipeline.errors import ConfigError

#: Settings that ``train_model(overrides=...)`` and Airflow Params may change.
TRAINING_OVERRIDES = frozenset(
    {
        "epochs",
        "batch_size",
        "learning_rate",
        "image_size",
        "trainable_blocks",
        "max_records",
        "fine_tune_epochs",
        "fine_tune_learning_rate",
        "weights",
        "augment",
        "head_units",
        "dropout",
        "early_stopping_patience",
        "seed",
        "target_recall",
        "val_fraction",
    }
)


def apply_overrides(
    settings: Settings,
    overrides: dict[str, Any] | None,
    allowed: Iterable[str] = TRAINING_OVERRIDES,
) -> Settings:
    """A new validated Settings with ``overrides`` (None values ignored) applied; names
    outside ``allowed`` (by default the training settings) are refused."""
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(values) - set(allowed)
    if unknown:
        raise ConfigError(f"unknown override(s): {sorted(unknown)}")
    if not values:
        return settings
    from pydantic import ValidationError

    try:
        return Settings(**{**settings.model_dump(), **values})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
