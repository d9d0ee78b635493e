"""Light constants and Param schemas shared by the DAG files.

Imported at DAG parse time, so it must stay cheap: no TensorFlow, MLflow, GX or BentoML here
(the DAG-integrity test checks that parsing the DAGs imports none of them).

The trigger parameters of ``mammo_retrain`` come in two kinds:

* **training** parameters (:data:`TRAINING_PARAM_SCHEMAS`) override the training settings of
  one run, as ``mammo train`` options do (``mammo_pipeline.overrides``);
* **policy** parameters (:data:`POLICY_PARAM_SCHEMAS`) may only *tighten* the deployment's
  promotion policy (``MAMMO_MIN_PRECISION`` ...): they are passed to the gate as ``requested``
  values and a looser one fails the run before anything is trained
  (``mammo_pipeline.registry.policy.tightened``).
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

# Task ids of the review part of mammo_retrain (the tasks read each other's XComs by id).
GATE_TASK = "gate"
APPROVAL_TASK = "await_approval"
PROMOTE_TASK = "promote"
REJECTION_TASK = "record_rejection"
#: XCom key under which the approval task keeps the reviewer's response (who, when, what).
REVIEW_XCOM_KEY = "review"
APPROVE = "Approve"
REJECT = "Reject"
#: The approval form's one field: why (recorded on the model version with the reviewer).
REVIEW_REASON_PARAM = "reason"


def _policy_description(what: str, setting: str) -> str:
    return f"gate: {what}; may only tighten the deployment's policy (MAMMO_{setting.upper()})"


#: JSON Schema of each training parameter of ``mammo_retrain``. ``null`` means "use the
#: configured default" (MAMMO_* settings), so a plain trigger needs no form input.
TRAINING_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
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
}

#: JSON Schema of each policy parameter: the names are fields of
#: ``mammo_pipeline.registry.policy.GatePolicy`` (checked by ``tests/test_policy_params.py``).
POLICY_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "min_precision": {
        "type": ["null", "number"],
        "minimum": 0,
        "maximum": 1,
        "description": _policy_description("minimum test precision", "min_precision"),
    },
    "min_recall": {
        "type": ["null", "number"],
        "minimum": 0,
        "maximum": 1,
        "description": _policy_description("minimum test recall", "min_recall"),
    },
    "regression_tolerance": {
        "type": ["null", "number"],
        "minimum": 0,
        "maximum": 1,
        "description": _policy_description(
            "largest loss allowed vs champion and baseline", "regression_tolerance"
        ),
    },
    "gate_lower_bound": {
        "type": ["null", "boolean"],
        "description": _policy_description(
            "thresholds cleared by the Wilson lower bound", "gate_lower_bound"
        ),
    },
    "require_approval": {
        "type": ["null", "boolean"],
        "description": "wait for a human approval in Airflow before promoting; "
        "may only tighten the deployment's policy (MAMMO_REQUIRE_APPROVAL)",
    },
}

#: Every trigger parameter of ``mammo_retrain``.
RETRAIN_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    **TRAINING_PARAM_SCHEMAS,
    **POLICY_PARAM_SCHEMAS,
}


def _set_values(params: dict[str, Any] | None, names: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if k in names and v is not None}


def training_overrides(params: dict[str, Any] | None) -> dict[str, Any]:
    """The training parameters a user actually set (``None`` means the configured default)."""
    return _set_values(params, TRAINING_PARAM_SCHEMAS)


def policy_request(params: dict[str, Any] | None) -> dict[str, Any]:
    """The policy parameters a user actually set: the gate's ``requested`` values, which may
    only tighten the deployment's policy."""
    return _set_values(params, POLICY_PARAM_SCHEMAS)


def approval_assignees(approvers: tuple[str, ...] | list[str]) -> list[dict[str, str]] | None:
    """``assigned_users`` of the approval task (Airflow user ids; the simple auth manager's
    ids are the user names); ``None`` when no approver is configured (anyone allowed to act
    on the DAG may answer)."""
    users = [a.strip() for a in approvers if a and a.strip()]
    return [{"id": a, "name": a} for a in users] or None
