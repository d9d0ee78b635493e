"""mammo_deploy: manual redeploy of a model version, or rollback to the previous champion.

Wiring only; the logic lives in ``mammo_pipeline.orchestration.tasks``.
"""

from __future__ import annotations

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
            description="version to deploy (empty: the current champion)",
        ),
        "reason": Param(
            "manual redeploy",
            type="string",
            minLength=3,
            description="recorded on the model version",
        ),
    },
    tags=["mammo", "serving"],
    doc_md="""
### Redeploy or roll back the served model

Manual only. `action=deploy` makes `version` (or the current champion) the champion and
deploys it blue/green: the new service starts beside the live one, is smoke-tested, then
takes over. `action=rollback` moves `champion` back to `previous` and deploys it. Every
action is recorded as tags on the model version (who, when, why).
""",
)
def mammo_deploy():
    @task(queue=SERVING_QUEUE)
    def redeploy(params: dict | None = None) -> dict:
        from mammo_pipeline.orchestration.tasks import manual_deploy

        return manual_deploy(params or {})

    redeploy()


mammo_deploy()
