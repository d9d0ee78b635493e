"""mammo_deploy: manual redeploy of a model version, or rollback to the previous champion.

Wiring only; the logic lives in ``mammo_pipeline.orchestration.tasks``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from mammo_pipeline.orchestration.params import SERVING_QUEUE


@dag(
    dag_id="mammo_deploy",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "action": Param(
            "deploy",
            enum=["deploy", "rollback"],
            description="deploy a version, or roll the champion back to previous",
        ),
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="vetted version to deploy (empty: the current champion); a non-champion "
            "becomes the champion by your recorded approval",
        ),
        "reason": Param(
            "manual redeploy",
            type="string",
            minLength=3,
            description="why (recorded on the model version with your name)",
        ),
    },
    tags=["mammo", "serving"],
    doc_md="""
### Redeploy or roll back the served model

Manual only. `action=deploy` deploys the current champion, or `version`, blue/green: the new
service starts beside the live one, is smoke-tested, then takes over. Only vetted versions
are served (`gate=passed`, or `gate=manual` with a recorded approval); an unvetted `version`
fails the run with the reason. A vetted `version` that is not the champion becomes the
champion by the approval of the user who triggered this run (recorded as the reviewer, with
`reason`); a run that names no triggering user is refused (use `mammo registry approve`).
`action=rollback` moves `champion` back to `previous` (itself vetted) and deploys it. Every
action is recorded as tags on the model version (who, when, why).

Tasks: `prepare` (the registry's side: rollback or approval, on a worker that may write to
the registry), `redeploy` (queue `serving`: on the prediction service's host), `record_deploy`
(the `deploy=live|failed` record and, after a failure, the champion moved back: on a writer,
since the serving host's MLflow user may only read).
""",
)
def mammo_deploy():
    @task
    def prepare(params: dict | None = None, dag_run: Any = None) -> dict:
        from mammo_pipeline.orchestration.tasks import prepare_manual_deploy

        return prepare_manual_deploy(
            params or {},
            triggered_by=getattr(dag_run, "triggering_user_name", None),
            run_id=getattr(dag_run, "run_id", None),
        )

    @task(queue=SERVING_QUEUE)
    def redeploy(prepared: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import deploy_champion

        return deploy_champion(prepared)

    @task
    def record_deploy(deployed: dict) -> dict:
        from mammo_pipeline.orchestration.tasks import record_deploy as record

        return record(deployed)

    record_deploy(redeploy(prepare()))


mammo_deploy()
