"""The MLflow model registry of mammo-mlops: register, gate, promote, review, list.

Only aliases are used, never stages: ``champion`` (served), ``previous`` (rollback target),
``challenger`` (last candidate that did not pass, or waits for a reviewer), ``baseline``
(the reference that bounds cumulative regression); see
``docs/architecture.md`` for the tags every version carries.

Modules: :mod:`.names` (alias and metric names), :mod:`.gate` (the decision, pure),
:mod:`.store` (MLflow plumbing), :mod:`.register`, :mod:`.promotion` (gate + aliases),
:mod:`.review` (approve / reject / rollback), :mod:`.listing` and :mod:`.report`
(+ :mod:`.report_html`) for people.

May import: config, errors, common, data, training (the run's model name). Never serving,
orchestration or cli. The public API is re-exported here.
"""

from __future__ import annotations

from mammo_pipeline.registry.decision import GateDecision
from mammo_pipeline.registry.listing import VersionRow, list_versions, review_context
from mammo_pipeline.registry.lock import registry_lock
from mammo_pipeline.registry.names import BASELINE, CHALLENGER, CHAMPION, PREVIOUS
from mammo_pipeline.registry.policy import GatePolicy, tightened
from mammo_pipeline.registry.promotion import (
    PromotionResult,
    apply_decision,
    gate_and_apply,
    gate_version,
)
from mammo_pipeline.registry.register import ModelVersionRef, register_run
from mammo_pipeline.registry.report import report_artifact_path, write_review_report
from mammo_pipeline.registry.review import ReviewResult, approve, pin_baseline, reject, rollback
from mammo_pipeline.registry.vetting import vetting_problem

__all__ = [
    "BASELINE",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "GateDecision",
    "GatePolicy",
    "ModelVersionRef",
    "PromotionResult",
    "ReviewResult",
    "VersionRow",
    "apply_decision",
    "approve",
    "gate_and_apply",
    "gate_version",
    "list_versions",
    "pin_baseline",
    "register_run",
    "registry_lock",
    "reject",
    "report_artifact_path",
    "review_context",
    "rollback",
    "tightened",
    "vetting_problem",
    "write_review_report",
]
