"""The MLflow model registry of mammo-mlops: register, gate, promote, review, list.

Only aliases are used, never stages: ``champion`` (served), ``previous`` (rollback target),
``challenger`` (last candidate that did not pass, or waits for a reviewer), ``baseline``
(the reference that bounds cumulative regression); see
``docs/architecture.md`` for the tags every version carries.

Modules: :mod:`.names` (alias, tag and metric names), :mod:`.state` (a version's place in
the lifecycle, read from its tags and signature), :mod:`.gate` (the decision, pure),
:mod:`.store` (MLflow plumbing), :mod:`.register`, :mod:`.promotion` (gate + aliases, under
the lock: :func:`gate_and_promote`), :mod:`.summary` (the gate's verdict in words),
:mod:`.review` (approve / reject), :mod:`.approvals` (the approvals the DAGs and the CLI
share), :mod:`.rollbacks`, :mod:`.deployments` (the deployer's records), :mod:`.listing`
and :mod:`.report` (+ :mod:`.report_html`) for people; :mod:`.journal` makes each action's
writes crash-consistent (:mod:`.faults` kills a process between two of them, for the fault
tests); :mod:`.attestation` (signed evaluations, decisions and approvals; what is verified
before serving) and :mod:`.rescore` (the gate re-scores the registered model itself).

May import: config, errors, common, data, training (the run's model name). Never serving,
orchestration or cli. The public API is re-exported here, lazily (importing
``mammo_pipeline.registry.names`` does not pull in MLflow, NumPy or the gate).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "BASELINE": "mammo_pipeline.registry.names",
    "CHALLENGER": "mammo_pipeline.registry.names",
    "CHAMPION": "mammo_pipeline.registry.names",
    "GateDecision": "mammo_pipeline.registry.decision",
    "GatePolicy": "mammo_pipeline.registry.policy",
    "ModelVersionRef": "mammo_pipeline.registry.register",
    "PREVIOUS": "mammo_pipeline.registry.names",
    "PromotionResult": "mammo_pipeline.registry.promotion",
    "ReviewResult": "mammo_pipeline.registry.review",
    "VersionRow": "mammo_pipeline.registry.listing",
    "Tag": "mammo_pipeline.registry.names",
    "Verdict": "mammo_pipeline.registry.names",
    "VersionState": "mammo_pipeline.registry.state",
    "approve": "mammo_pipeline.registry.review",
    "approve_awaiting": "mammo_pipeline.registry.approvals",
    "champion_for_deploy": "mammo_pipeline.registry.approvals",
    "gate_and_promote": "mammo_pipeline.registry.promotion",
    "gate_summary": "mammo_pipeline.registry.summary",
    "gate_version": "mammo_pipeline.registry.promotion",
    "list_versions": "mammo_pipeline.registry.listing",
    "pin_baseline": "mammo_pipeline.registry.baseline",
    "register_run": "mammo_pipeline.registry.register",
    "registry_lock": "mammo_pipeline.registry.lock",
    "reject": "mammo_pipeline.registry.review",
    "repair": "mammo_pipeline.registry.journal",
    "report_artifact_path": "mammo_pipeline.registry.report",
    "review_context": "mammo_pipeline.registry.listing",
    "rollback": "mammo_pipeline.registry.rollbacks",
    "tightened": "mammo_pipeline.registry.policy",
    "version_state": "mammo_pipeline.registry.state",
    "vetting_problem": "mammo_pipeline.registry.vetting",
    "write_review_report": "mammo_pipeline.registry.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
