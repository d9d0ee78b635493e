"""Task-level functions the Airflow DAGs call: each takes and returns JSON-serialisable values
(XCom), reads the settings itself, and raises ``AirflowSkipException`` with a reason when a
step has nothing to do, or ``AirflowFailException`` with a one-line reason when it must stop
the run. The DAG files only wire these together.

The promotion policy belongs to the deployment (``MAMMO_*`` settings): a run's parameters may
only tighten it (``check_policy`` refuses a looser one before anything is trained, and the
gate receives them as ``requested`` values), a person's approval in Airflow goes through the
registry's re-check (:mod:`mammo_pipeline.registry.approvals`, shared with the CLI) with the
Airflow user recorded as the reviewer, and a manual deploy serves only vetted versions. The
registry's rules live in ``registry/``; these functions only translate results and errors into
task outcomes.

Heavy libraries are imported inside the functions so that DAG parsing stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.orchestration.params import (
    APPROVAL_TASK,
    APPROVE,
    REJECT,
    REVIEW_REASON_PARAM,
    policy_request,
    training_overrides,
)
from mammo_pipeline.registry.identity import Identity


def _skip(reason: str) -> NoReturn:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)


def _fail(reason: str) -> NoReturn:
    """End the task (no retry) with a message meant for a person."""
    from airflow.sdk.exceptions import AirflowFailException

    print(f"ERROR: {reason}")
    raise AirflowFailException(reason)


def _data_kind(synthetic: bool | None) -> str:
    if synthetic is None:
        return "data of unknown origin"
    return "SYNTHETIC data" if synthetic else "real data"


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
def check_policy(params: dict[str, Any] | None) -> dict[str, Any]:
    """First task of a run: the trigger's training values must be valid settings and its
    policy values may only tighten the deployment's policy; otherwise the run fails here,
    before anything is trained, with the reason in the log."""
    from mammo_pipeline.overrides import apply_overrides
    from mammo_pipeline.registry.policy import GatePolicy, tightened

    s = get_settings()
    requested = policy_request(params)
    try:
        apply_overrides(s, training_overrides(params))
        policy = tightened(GatePolicy.from_settings(s), requested)
    except MammoError as exc:
        _fail(f"mammo_retrain refused its parameters, nothing was trained: {exc}")
    print(f"gate policy of this run: {policy.describe()}")
    if requested:
        print(f"tightened by the trigger's parameters: {requested}")
    return {"policy": policy.to_dict(), "requested": requested}


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
        f"{manifest.total_records} records ({_data_kind(manifest.synthetic)}) -> {path}"
    )
    return {"manifest_path": str(path), **manifest.to_dict()}


def airflow_run_tags(dag_id: str, run_id: str | None) -> dict[str, str]:
    """The tags that say which Airflow run made a training run and its model version."""
    return {"airflow_dag_id": dag_id, **({"airflow_run_id": run_id} if run_id else {})}


def train_candidate(
    manifest: dict[str, Any], params: dict[str, Any], run_tags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    from mammo_pipeline.data.manifest import DataManifest
    from mammo_pipeline.training.train import train_model

    s = get_settings()
    result = train_model(
        s,
        manifest=DataManifest.from_dict(manifest),
        overrides=training_overrides(params),
        run_tags=run_tags,
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


def register_candidate(
    evaluated: dict[str, Any], run_tags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Register the evaluated run's model; ``run_tags`` (which Airflow run) go on the version
    and travel on to the gate, which copies them again with the verdict."""
    from mammo_pipeline.registry import register_run

    ref = register_run(get_settings(), evaluated["run_id"], run_tags=run_tags)
    return {**ref.to_dict(), "metrics": evaluated.get("metrics", {}),
            "run_tags": dict(run_tags or {})}  # fmt: skip


def gate_candidate(registered: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Gate the version under the deployment's policy, tightened by the trigger's policy
    parameters, tag the verdict and move aliases (pass: champion, or challenger awaiting
    approval when a person must approve; fail: challenger). A failed gate is a result, not
    an error."""
    from mammo_pipeline.registry import GatePolicy, Verdict, gate_and_promote, gate_summary

    s = get_settings()
    version = str(registered["version"])
    try:
        decision, promotion = gate_and_promote(
            s, version, requested=policy_request(params), run_tags=registered.get("run_tags")
        )
    except MammoError as exc:
        _fail(f"gating version {version} failed: {exc}")
    policy = GatePolicy(**decision.policy) if decision.policy else GatePolicy.from_settings(s)
    passed = promotion.verdict == Verdict.PASSED
    synthetic = (decision.statistics or {}).get("synthetic")
    summary = "\n".join(gate_summary(s, version, decision, promotion))
    print(summary)
    return {
        "version": version,
        "passed": passed,
        "awaiting_approval": bool(promotion.awaiting_approval),
        "require_approval": bool(policy.require_approval),
        "policy": policy.to_dict(),
        "synthetic": synthetic,
        "reasons": list(promotion.reasons),
        "promotion": promotion.to_dict(),
        "summary": summary,
    }


def route_after_gate(decision: dict[str, Any]) -> str:
    if not decision["passed"]:
        return "report_gate_failure"
    return APPROVAL_TASK if decision.get("awaiting_approval") else "approval_not_required"


def report_gate_failure(decision: dict[str, Any]) -> dict[str, Any]:
    """Ends a run whose candidate failed the gate green, with the decision in the log."""
    print(decision["summary"])
    print(f"version {decision['version']} is now 'challenger'; nothing is deployed.")
    return {"version": decision["version"], "gate": "failed", "reasons": decision["reasons"]}


# --------------------------------------------------------- the review (Approve / Reject)
def review_record(event: Mapping[str, Any]) -> dict[str, Any]:
    """The reviewer's answer to the approval task, JSON-serialisable (kept in its XCom):
    the option chosen, the form's values, who answered (None when nobody did and the
    default answer was applied at the timeout) and when."""
    chosen = list(event.get("chosen_options") or [])
    at = event.get("responded_at")
    user = event.get("responded_by_user")
    return {
        "chosen": chosen[0] if len(chosen) == 1 else None,
        "chosen_options": chosen,
        "params_input": dict(event.get("params_input") or {}),
        "responded_by_user": dict(user) if user else None,
        "responded_at": at.isoformat() if hasattr(at, "isoformat") else at,
        "timed_out": bool(event.get("timedout")),
    }


def reviewer_identity(review: Mapping[str, Any] | None) -> str | None:
    """The Airflow user who answered: their name, with the id when it differs."""
    user = (review or {}).get("responded_by_user") or {}
    name = str(user.get("name") or "").strip()
    uid = str(user.get("id") or "").strip()
    if name and uid and name != uid:
        return f"{name} (Airflow user id {uid})"
    return name or uid or None


def _review_reason(review: Mapping[str, Any], default: str) -> str:
    text = str((review.get("params_input") or {}).get(REVIEW_REASON_PARAM) or "").strip()
    return text or default


def promote_candidate(
    decision: dict[str, Any], review: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Make the candidate champion. Without a required approval the gate already did; with
    one, the Airflow approver's answer goes through the registry's ``approve`` (which
    re-gates when the champion or baseline changed since), recorded under their name."""
    from mammo_pipeline.registry.approvals import approve_awaiting

    version = str(decision.get("version"))
    if not decision.get("passed"):
        _skip(f"gate failed for version {version}: nothing to promote")
    if not decision.get("awaiting_approval"):
        return {"version": version, "approved_by": None, "promotion": decision["promotion"]}
    if not review or review.get("chosen") != APPROVE:
        _fail(f"no approval of version {version} was recorded in Airflow; nothing promoted")
    who = reviewer_identity(review)
    if who is None:
        _fail(f"the approval of version {version} names no Airflow user; nothing promoted")
    reason = _review_reason(review, "approved in Airflow")
    try:
        result = approve_awaiting(get_settings(), version, reason, Identity(who, "airflow"))
    except MammoError as exc:
        _fail(f"version {version} not promoted: {exc}")
    print(result.message)
    if result.champion_after != version:
        _skip(f"approved by {who} but not promoted: {result.message}")
    return {"version": version, "approved_by": who, "review": result.to_dict()}


def record_rejection(
    decision: dict[str, Any], review: dict[str, Any] | None, timeout_hours: float | None = None
) -> dict[str, Any]:
    """The reviewer chose Reject (or nobody answered before the timeout, whose default answer
    is Reject): tag the version ``review=rejected`` with who and why; nothing is promoted."""
    from mammo_pipeline.registry import reject

    version = str(decision.get("version"))
    if not review or review.get("chosen") != REJECT:
        _fail(f"no rejection of version {version} was recorded in Airflow")
    who = reviewer_identity(review)
    if review.get("timed_out") or who is None:
        after = f" within {timeout_hours:g} h" if timeout_hours else ""
        who = "nobody (approval timed out)"
        actor = Identity(who, "system")
        reason = _review_reason(review, f"no answer{after}: Reject is the default answer")
    else:
        actor = Identity(who, "airflow")
        reason = _review_reason(review, "rejected in Airflow")
    try:
        result = reject(get_settings(), version, reason=reason, who=actor)
    except MammoError as exc:
        _fail(f"recording the rejection of version {version} failed: {exc}")
    print(f"version {version} rejected by {who}: {reason}; nothing is promoted or deployed")
    return {"version": version, "review": "rejected", "by": who, "reason": reason,
            "result": result.to_dict()}  # fmt: skip


def deploy_champion(promoted: dict[str, Any]) -> dict[str, Any]:
    """Blue/green deploy of the promoted version (queue ``serving``). A failed deploy fails
    this task, the service that was live keeps serving; when the registry records are left
    to a writer (``deploy_records_registry`` false), :func:`record_deploy` fails instead,
    after recording the failure and moving the champion back."""
    from mammo_pipeline.serving.deploy import deploy_version

    version = promoted.get("version")
    result = deploy_version(get_settings(), None if version is None else str(version))
    print("\n".join(result.steps))
    if not result.ok and not result.record_pending:
        _fail(f"deploy of version {result.version or version} failed: {result.message}")
    return result.to_dict()


def record_deploy(deployed: dict[str, Any]) -> dict[str, Any]:
    """On a writer's queue, after the deploy: the registry records the serving host could not
    write (``deploy=live|failed``, the champion moved back after a failure); a failed deploy
    fails this task, with the reason."""
    from mammo_pipeline.registry.deployments import record_outcome

    version, ok = str(deployed.get("version")), bool(deployed.get("ok"))
    if not deployed.get("record_pending"):
        return {"version": version, "recorded_by": "the deployer"}
    try:
        moved = record_outcome(get_settings(), version, ok, str(deployed.get("message") or ""),
                               deployed.get("restore_to"))  # fmt: skip
    except MammoError as exc:
        _fail(str(exc))
    if not ok:
        back = f"; champion moved back to v{moved}" if moved else ""
        _fail(f"deploy of version {version} failed: {deployed.get('message')}{back}")
    print(f"recorded: v{version} deploy=live")
    return {"version": version, "recorded_by": "record_deploy", "deploy": "live"}


# ------------------------------------------------------------------ mammo_deploy
def prepare_manual_deploy(
    params: dict[str, Any], triggered_by: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """The registry side of ``mammo_deploy`` (a writer's queue). ``action=rollback``:
    champion back to ``previous`` (a vetted version). ``action=deploy``: the champion, or
    ``version``, which must be vetted (gate=passed or an approved gate=manual); a vetted
    version that is not the champion is promoted by the triggering user's recorded approval,
    and refused when the run names no user. Returns what :func:`deploy_champion` deploys."""
    from mammo_pipeline.registry import rollback
    from mammo_pipeline.registry.approvals import champion_for_deploy

    s = get_settings()
    reason = str(params.get("reason") or "manual redeploy").strip()
    via = f"mammo_deploy run {run_id}" if run_id else "mammo_deploy"
    out: dict[str, Any] = {"version": None}
    version = params.get("version")
    try:
        if params.get("action") == "rollback":
            who = triggered_by or f"unknown Airflow user ({via})"
            out["rollback"] = rollback(s, reason=reason, who=Identity(who, "airflow")).to_dict()
        elif version is not None:
            out["version"] = str(version)
            actor = Identity(triggered_by, "airflow") if triggered_by else None
            approval = champion_for_deploy(
                s,
                str(version),
                f"{reason} ({via})",
                actor,
                need_named="this run names no triggering user",
            )
            if approval is not None:
                print(approval.message)
                out["approval"] = approval.to_dict()
    except MammoError as exc:
        _fail(str(exc))
    return out
