"""Light constants and Param schemas shared by the DAG files.

Imported at DAG parse time, so it must stay cheap: no TensorFlow, MLflow, GX or BentoML here
(the DAG-integrity test checks that parsing the DAGs imports none of them).
"""

from __future__ import annotations

from typing import Any

VALIDATED_DATA_ASSET = "mammo_validated_data"
GPU_QUEUE = "gpu"
#: Deploy tasks run where the service lives (the compose `bentoml` host: `mammo serving-node`).
SERVING_QUEUE = "serving"
GPU_POOL = "mammo_gpu"
GPU_POOL_SLOTS = 1
RETRAIN_CRON = "0 3 * * 1"  # Mondays 03:00 UTC
VALIDATE_EVERY_MINUTES_DEFAULT = 5

#: JSON Schema of each manual-trigger parameter of ``mammo_retrain``. ``null`` means
#: "use the configured default" (MAMMO_* settings), so a plain trigger needs no form input.
RETRAIN_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "epochs": {
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 500,
        "description": "training epochs of phase 1 (frozen base)",
    },
    "batch_size": {
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 1024,
        "description": "images per training step",
    },
    "learning_rate": {
        "type": ["null", "number"],
        "exclusiveMinimum": 0,
        "maximum": 1,
        "description": "Adam learning rate of phase 1",
    },
    "image_size": {
        "type": ["null", "integer"],
        "minimum": 32,
        "maximum": 512,
        "description": "model input side in pixels (299 = native)",
    },
    "trainable_blocks": {
        "type": ["null", "integer"],
        "minimum": 0,
        "maximum": 5,
        "description": "top VGG16 conv blocks fine-tuned in phase 2",
    },
    "max_records": {
        "type": ["null", "integer"],
        "minimum": 1,
        "description": "cap on training records (quick runs)",
    },
    "min_precision": {
        "type": ["null", "number"],
        "minimum": 0,
        "maximum": 1,
        "description": "gate: minimum test precision",
    },
    "min_recall": {
        "type": ["null", "number"],
        "minimum": 0,
        "maximum": 1,
        "description": "gate: minimum test recall",
    },
    "require_approval": {
        "type": ["null", "boolean"],
        "description": "wait for a human approval before promoting",
    },
}


def params_to_overrides(params: dict[str, Any] | None) -> dict[str, Any]:
    """The trigger parameters a user actually set (``None`` means the configured default)."""
    return {k: v for k, v in (params or {}).items() if k in RETRAIN_PARAM_SCHEMAS and v is not None}
