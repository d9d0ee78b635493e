"""Task-level functions the Airflow DAGs call: each takes and returns JSON-serialisable values
(XCom), reads the settings itself, and raises ``AirflowSkipException`` with a reason when a
step has nothing to do. The DAG files only wire these together.

Heavy libraries are imported inside the functions so that DAG parsing stays cheap.
"""

from __future__ import annotations

from typing import Any

from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.orchestration.params import RETRAIN_PARAM_SCHEMAS, params_to_overrides


def _skip(reason: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)


def _settings(params: dict[str, Any] | None = None) -> Settings:
    """The configured settings, with the trigger's non-empty parameters applied (every
    trigger parameter is a settings field; the Params' JSON Schema already checked them)."""
    from mammo_pipeline.overrides import apply_overrides

    return apply_overrides(
        get_settings(), params_to_overrides(params), allowed=RETRAIN_PARAM_SCHEMAS
    )


def _training_overrides(params: dict[str, Any] | None) -> dict[str, Any]:
    from mammo_pipeline.overrides import TRAINING_OVERRIDES

    return {k: v for k, v in params_to_overrides(params).items() if k in TRAINING_OVERRIDES}


# ------------------------------------------------------------------ mammo_validate_incoming
def validate_incoming() -> dict[str, Any]:
    from mammo_pipeline.validation.run import validate_landing

    result = validate_landing(get_settings())
    print("\n".join(result.summary_lines()))
    return result.to_dict()


def new_validated_files_or_skip(result: dict[str, Any]) -> list[str]:
    """The files that newly passed; skip (no Asset event, so no retraining) when none did."""
    new = list(result.get("new_validated_files") or [])
    if not new:
        _skip("nothing new passed validation; mammo_retrain is not triggered")
    return new


# ------------------------------------------------------------------ mammo_retrain
def snapshot_validated() -> dict[str, Any]:
    """Manifest (sha256 of every file) of the validated data the run will train on."""
    from mammo_pipeline.data.manifest import build_manifest
    from mammo_pipeline.data.tfrecord_io import list_tfrecords

    s = get_settings()
    if not s.validated.is_dir() or not list_tfrecords(s.validated):
        _skip(f"no validated data in {s.validated} yet; drop tfrecords into {s.landing}")
    manifest = build_manifest(list_tfrecords(s.validated))
    path = manifest.write(s.reports / "manifests" / f"{manifest.sha256}.json")
    print(
        f"snapshot {manifest.sha256[:12]}: {len(manifest.files)} files, "
        f"{manifest.total_records} records -> {path}"
    )
    return {"manifest_path": str(path), **manifest.to_dict()}


def train_candidate(
    manifest: dict[str, Any], params: dict[str, Any], airflow_run_id: str | None = None
) -> dict[str, Any]:
    from mammo_pipeline.data.manifest import DataManifest
    from mammo_pipeline.training.train import train_model

    s = get_settings()
    result = train_model(
        s,
        manifest=DataManifest.from_dict(manifest),
        overrides=_training_overrides(params),
        airflow_run_id=airflow_run_id,
        evaluate=False,
    )
    _link_data_docs(s, result.run_id)
    return result.to_dict()


def _link_data_docs(settings: Settings, run_id: str) -> None:
    """Tag the training run with where the validation Data Docs of its data are."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.validation.gx_context import data_docs_dir

    index = data_docs_dir(settings) / "index.html"
    if index.is_file():
        mlflow_client(settings).set_tag(run_id, "data_docs", index.as_uri())


def evaluate_candidate(trained: dict[str, Any]) -> dict[str, Any]:
    """Metrics of the candidate on the fixed held-out test split (logged on its run)."""
    from mammo_pipeline.training.evaluate import evaluate_run

    metrics = evaluate_run(get_settings(), trained["run_id"])
    return {**trained, "metrics": metrics}


def register_candidate(evaluated: dict[str, Any], airflow_run_id: str | None = None) -> dict:
    from mammo_pipeline.registry import register_run

    ref = register_run(get_settings(), evaluated["run_id"], airflow_run_id=airflow_run_id)
    return {**ref.to_dict(), "metrics": evaluated.get("metrics", {})}


def gate_candidate(registered: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Gate the version, tag the verdict, move aliases (pass: champion, unless a human must
    approve first; fail: challenger). A failed gate is a result, not an error."""
    from mammo_pipeline.registry import gate_and_apply

    s = _settings(params)
    decision, promotion = gate_and_apply(
        s,
        registered["version"],
        min_precision=s.min_precision,
        min_recall=s.min_recall,
        airflow_run_id=registered.get("airflow_run_id"),
    )
    d = decision.to_dict()
    lines = [f"version {registered['version']}: gate {'PASSED' if decision.passed else 'FAILED'}"]
    for check in d.get("checks", []):
        lines.append(
            f"- {'PASS' if check.get('passed') else 'FAIL'} {check.get('name')}: "
            f"{check.get('observed')} {check.get('op', '')} {check.get('threshold')}"
        )
    summary = "\n".join(lines)
    print(summary)
    return {
        "version": str(registered["version"]),
        "passed": bool(decision.passed),
        "require_approval": bool(s.require_approval),
        "decision": d,
        "promotion": promotion.to_dict(),
        "summary": summary,
    }


def route_after_gate(decision: dict[str, Any], params: dict[str, Any]) -> str:
    if not decision["passed"]:
        return "report_gate_failure"
    return "await_approval" if decision.get("require_approval") else "approval_not_required"


def report_gate_failure(decision: dict[str, Any]) -> dict[str, Any]:
    """Ends a run whose candidate failed the gate green, with the decision in the log."""
    print(decision["summary"])
    print(f"version {decision['version']} is now 'challenger'; nothing is deployed.")
    return {
        "version": decision["version"],
        "gate": "failed",
        "reasons": decision["decision"].get("reasons", []),
    }


def promote_candidate(decision: dict[str, Any]) -> dict[str, Any]:
    """Make the candidate champion (after approval when one was required)."""
    from mammo_pipeline.registry import approve

    if not decision.get("passed"):
        _skip(f"gate failed for version {decision.get('version')}: nothing to promote")
    if decision.get("require_approval"):
        result = approve(
            get_settings(), decision["version"], reason="approved in Airflow (await_approval)"
        )
        return {"version": decision["version"], "promotion": result.to_dict()}
    return {"version": decision["version"], "promotion": decision.get("promotion", {})}


def deploy_champion(promoted: dict[str, Any]) -> dict[str, Any]:
    from mammo_pipeline.serving.deploy import deploy_version

    return deploy_version(get_settings(), promoted["version"]).to_dict()


# ------------------------------------------------------------------ mammo_deploy
def manual_deploy(params: dict[str, Any]) -> dict[str, Any]:
    from mammo_pipeline.registry import approve, rollback
    from mammo_pipeline.serving.deploy import deploy_version

    s = get_settings()
    reason = params.get("reason") or "manual redeploy"
    if params.get("action") == "rollback":
        changed = rollback(s, reason=reason)
        return {"rollback": changed.to_dict(), "deploy": deploy_version(s).to_dict()}
    version = params.get("version")
    if version is not None:
        approve(s, version, reason=reason)
    return {"deploy": deploy_version(s, version).to_dict()}
