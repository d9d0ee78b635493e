"""mammo_retrain: snapshot validated data, train on the GPU queue, evaluate, register, gate,
optionally wait for a human approval, promote and deploy.

Wiring only; the logic lives in ``mammo_pipeline.orchestration.tasks``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    task,
)

from mammo_pipeline.orchestration.params import (
    GPU_POOL,
    GPU_QUEUE,
    RETRAIN_CRON,
    RETRAIN_PARAM_SCHEMAS,
    SERVING_QUEUE,
    VALIDATED_DATA_ASSET,
)


@dag(
    dag_id="mammo_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(RETRAIN_CRON, timezone="UTC"),
        assets=[Asset(VALIDATED_DATA_ASSET)],
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
(`MAMMO_*`); values are checked against a JSON Schema before a run is created.

1. `snapshot`: manifest (sha256) of the validated files; skipped when there is no data yet.
2. `train`: on the Celery queue `gpu`, limited by the pool `mammo_gpu`; logs an MLflow run.
3. `evaluate`: metrics on the fixed held-out test split, threshold chosen on validation data.
4. `register`: a new version of the registered model (idempotent on retries).
5. `gate`: thresholds and non-regression against the champion; the decision is tagged on the
   version. A failed gate ends the run green: the version becomes `challenger` and
   `report_gate_failure` says why.
6. `await_approval` (only when `require_approval`): a human approves in the Airflow UI.
7. `promote`: alias `champion` (the former one becomes `previous`), then `deploy` (queue
   `serving`: it runs on the host of the prediction service).
""",
)
def mammo_retrain():
    @task
    def snapshot() -> dict:
        from mammo_pipeline.orchestration.tasks import snapshot_validated

        return snapshot_validated()

    @task(queue=GPU_QUEUE, pool=GPU_POOL, retries=1, retry_delay=timedelta(minutes=2))
    def train(manifest: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import train_candidate

        return train_candidate(manifest, params or {}, airflow_run_id=run_id)

    @task
    def evaluate(trained: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import evaluate_candidate

        return evaluate_candidate(trained)

    @task(retries=2, retry_delay=timedelta(seconds=30))
    def register(evaluated: dict, run_id: str | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import register_candidate

        return register_candidate(evaluated, airflow_run_id=run_id)

    @task
    def gate(registered: dict, params: dict | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import gate_candidate

        return gate_candidate(registered, params or {})

    @task.branch
    def route(decision: dict, params: dict | None = None) -> str:
        from mammo_pipeline.orchestration.tasks import route_after_gate

        return route_after_gate(decision, params or {})

    @task
    def report_gate_failure(decision: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import report_gate_failure as report

        return report(decision)

    approval = ApprovalOperator(
        task_id="await_approval",
        subject="Promote mammo-vgg16 version {{ ti.xcom_pull(task_ids='gate')['version'] }}?",
        body="{{ ti.xcom_pull(task_ids='gate')['summary'] }}",
        response_timeout=timedelta(days=7),
    )

    @task
    def approval_not_required() -> None:
        """Placeholder on the branch taken when no human approval was asked for."""

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def promote(decision: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import promote_candidate

        return promote_candidate(decision)

    @task(queue=SERVING_QUEUE)
    def deploy(promoted: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import deploy_champion

        return deploy_champion(promoted)

    decision = gate(register(evaluate(train(snapshot()))))
    no_approval = approval_not_required()
    route(decision) >> [approval, no_approval, report_gate_failure(decision)]
    promoted = promote(decision)  # re-checks the decision and skips, saying why, if it failed
    [approval, no_approval] >> promoted
    deploy(promoted)


mammo_retrain()
