"""mammo_retrain: check the trigger's policy values (they may only tighten the deployment's),
snapshot validated data, train on the GPU queue, evaluate, register, gate, optionally wait for
a person's Approve / Reject in Airflow, promote and deploy.

Wiring only; the logic lives in ``mammo_pipeline.orchestration.tasks``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    task,
)

from mammo_pipeline.config import get_settings
from mammo_pipeline.monitoring.policy import MONITOR_ALERT_ASSET
from mammo_pipeline.orchestration.params import (
    APPROVAL_TASK,
    APPROVE,
    GATE_TASK,
    GPU_POOL,
    GPU_QUEUE,
    PROMOTE_TASK,
    REJECT,
    REJECTION_TASK,
    RETRAIN_CRON,
    RETRAIN_PARAM_SCHEMAS,
    REVIEW_REASON_PARAM,
    REVIEW_XCOM_KEY,
    SERVING_QUEUE,
    VALIDATED_DATA_ASSET,
    approval_assignees,
)

#: Who may answer the approval and how long it waits are the deployment's settings
#: (MAMMO_APPROVERS, MAMMO_APPROVAL_TIMEOUT_HOURS), read when the DAG is parsed.
SETTINGS = get_settings()


class ReviewOperator(HITLBranchOperator):
    """Approve / Reject in Airflow's Required Actions, each answer running its own task
    (Approve: ``promote``; Reject: ``record_rejection``). The answer (who, when, the reason
    typed in the form, whether the timeout chose it) is kept in XCom ``review`` for them.

    Airflow's ``ApprovalOperator`` has the same two options but on Reject only skips its
    downstream tasks, so no task could record the rejection; this is its branching form."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from mammo_pipeline.orchestration.tasks import review_record

        # Before branching: skipping the other branch ends this method with an exception
        # (Airflow 3's DownstreamTasksSkipped), so nothing after super() would run.
        if "error" not in event:
            context["ti"].xcom_push(key=REVIEW_XCOM_KEY, value=review_record(event))
        return super().execute_complete(context=context, event=event)


@dag(
    dag_id="mammo_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(RETRAIN_CRON, timezone="UTC"),
        # MAMMO_RETRAIN_ON_ALERT: also on a monitoring alert (the candidate is gated as usual)
        assets=Asset(VALIDATED_DATA_ASSET) | Asset(MONITOR_ALERT_ASSET)
        if SETTINGS.retrain_on_alert
        else [Asset(VALIDATED_DATA_ASSET)],
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={name: Param(None, **schema) for name, schema in RETRAIN_PARAM_SCHEMAS.items()},
    tags=["mammo", "training"],
    doc_md="""
### Retrain, gate and deploy the VGG16 lesion classifier

Runs weekly (Mondays 03:00 UTC), whenever `mammo_validate_incoming` publishes new validated
data, or on a manual trigger. Trigger parameters left empty use the configured defaults
(`MAMMO_*`); values are checked against a JSON Schema before a run is created. Training
parameters change this run's training; gate parameters (`min_precision`, `min_recall`,
`regression_tolerance`, `gate_lower_bound`, `require_approval`) may only **tighten** the
deployment's policy: a looser value fails the run at `check_policy`, before training.

1. `check_policy`: the trigger's values against the deployment's policy.
2. `snapshot`: manifest (sha256) of the validated files; skipped when there is no data yet.
3. `train`: on the Celery queue `gpu`, limited by the pool `mammo_gpu`; logs an MLflow run.
4. `evaluate`: metrics on the fixed held-out test split, threshold chosen on validation data.
5. `register`: a new version of the registered model (idempotent on retries).
6. `gate`: thresholds and paired non-regression against the champion and the baseline under
   the effective policy (tag `gate_policy`). A failed gate ends the run green: the version
   becomes `challenger` and `report_gate_failure` says why.
7. `await_approval` (only when approval is required): a person (one of `MAMMO_APPROVERS`,
   if set) answers Approve or Reject under *Required Actions*, with a reason. Approve:
   `promote` records them as the reviewer and promotes through the registry, which re-gates
   if the champion or baseline changed meanwhile. Reject: `record_rejection` tags the version
   `review=rejected` with who and why. No answer within `MAMMO_APPROVAL_TIMEOUT_HOURS` is a
   Reject.
8. `promote`: alias `champion` (the former one becomes `previous`), then `deploy` (queue
   `serving`: it runs on the host of the prediction service; a failed deploy fails the run
   and the live service keeps serving), then `record_deploy` (a writer records
   `deploy=live|failed` and, after a failure, moves the champion back: the serving host's
   MLflow user may only read).
""",
)
def mammo_retrain():
    @task
    def check_policy(params: dict | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import check_policy as check

        return check(params or {})

    @task
    def snapshot() -> dict:
        from mammo_pipeline.orchestration.tasks import snapshot_validated

        return snapshot_validated()

    @task(queue=GPU_QUEUE, pool=GPU_POOL, retries=1, retry_delay=timedelta(minutes=2))
    def train(manifest: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import airflow_run_tags, train_candidate

        return train_candidate(manifest, params or {}, airflow_run_tags("mammo_retrain", run_id))

    @task
    def evaluate(trained: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import evaluate_candidate

        return evaluate_candidate(trained)

    @task(retries=2, retry_delay=timedelta(seconds=30))
    def register(evaluated: dict, run_id: str | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import airflow_run_tags, register_candidate

        return register_candidate(evaluated, airflow_run_tags("mammo_retrain", run_id))

    @task(task_id=GATE_TASK)
    def gate(registered: dict, params: dict | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import gate_candidate

        return gate_candidate(registered, params or {})

    @task.branch
    def route(decision: dict) -> str:
        from mammo_pipeline.orchestration.tasks import route_after_gate

        return route_after_gate(decision)

    @task
    def report_gate_failure(decision: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import report_gate_failure as report

        return report(decision)

    approval = ReviewOperator(
        task_id=APPROVAL_TASK,
        subject="Promote mammo-vgg16 version {{ ti.xcom_pull(task_ids='gate')['version'] }}?",
        body="```\n{{ ti.xcom_pull(task_ids='gate')['summary'] }}\n```",
        options=[APPROVE, REJECT],
        options_mapping={APPROVE: PROMOTE_TASK, REJECT: REJECTION_TASK},
        defaults=REJECT,  # what the timeout answers: never an approval
        params={
            REVIEW_REASON_PARAM: Param(
                "",
                type="string",
                description="why (recorded on the model version with your name)",
            )
        },
        assigned_users=approval_assignees(SETTINGS.approvers),
        response_timeout=timedelta(hours=SETTINGS.approval_timeout_hours),
    )

    @task
    def approval_not_required() -> None:
        """Placeholder on the branch taken when no human approval was asked for."""

    @task(task_id=PROMOTE_TASK, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def promote(decision: dict, ti: Any = None) -> dict:
        from mammo_pipeline.orchestration.tasks import promote_candidate

        review = ti.xcom_pull(task_ids=APPROVAL_TASK, key=REVIEW_XCOM_KEY) if ti else None
        return promote_candidate(decision, review)

    @task(task_id=REJECTION_TASK)
    def record_rejection(decision: dict, ti: Any = None) -> dict:
        from mammo_pipeline.orchestration.tasks import record_rejection as record

        review = ti.xcom_pull(task_ids=APPROVAL_TASK, key=REVIEW_XCOM_KEY) if ti else None
        return record(decision, review, timeout_hours=SETTINGS.approval_timeout_hours)

    @task(queue=SERVING_QUEUE)
    def deploy(promoted: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import deploy_champion

        return deploy_champion(promoted)

    @task
    def record_deploy(deployed: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import record_deploy as record

        return record(deployed)

    policy = check_policy()
    manifest = snapshot()
    policy >> manifest
    decision = gate(register(evaluate(train(manifest))))
    no_approval = approval_not_required()
    route(decision) >> [approval, no_approval, report_gate_failure(decision)]
    promoted = promote(decision)  # re-checks the decision and skips, saying why, if it failed
    [approval, no_approval] >> promoted
    approval >> record_rejection(decision)
    record_deploy(deploy(promoted))


mammo_retrain()
