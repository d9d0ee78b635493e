"""mammo_monitor: compare the served version's recent predictions with its own reference,
log the report, and raise an alert (failed task + Asset) when the policy says so.

Wiring only; the logic lives in ``mammo_pipeline.orchestration.monitor_tasks``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, TriggerRule, dag, task

from mammo_pipeline.config import get_settings
from mammo_pipeline.monitoring.policy import MONITOR_ALERT_ASSET

monitoring_alert = Asset(MONITOR_ALERT_ASSET)
every = get_settings().monitor_every_minutes


@dag(
    dag_id="mammo_monitor",
    schedule=timedelta(minutes=every),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mammo", "monitoring"],
    doc_md="""
### Monitor the served model

Every `MAMMO_MONITOR_EVERY_MINUTES` minutes (default 60):

1. `compute_report`: deletes log records older than `MAMMO_MONITOR_RETENTION_DAYS`, then
   compares the champion's logged predictions of the last `MAMMO_MONITOR_SINCE_DAYS`, window
   by window (`MAMMO_MONITOR_WINDOW_HOURS`), with its own held-out reference: score and input
   drift (PSI and KS test), positive rate (Wilson interval), realised sensitivity /
   specificity / PPV from outcome feedback. The HTML report and JSON summary are logged on the
   version's run under `monitoring/`; the version is tagged `monitoring=alert|ok`.
   Skipped when nothing is served.
2. `publish_alert`: on an alert, updates the Asset `mammo://monitoring/alert` (which
   `mammo_retrain` is scheduled on when `MAMMO_RETRAIN_ON_ALERT` is true); skipped otherwise.
3. `fail_on_alert`: fails with the alert's reason, so the run shows red.

Monitoring never promotes anything: a retrained candidate goes through the full gate.
""",
)
def mammo_monitor():
    @task
    def compute_report() -> dict:
        from mammo_pipeline.orchestration.monitor_tasks import compute_report as compute

        return compute()

    @task(outlets=[monitoring_alert])
    def publish_alert(summary: dict) -> dict:
        from mammo_pipeline.orchestration.monitor_tasks import alert_or_skip

        return alert_or_skip(summary)

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def fail_on_alert(summary: dict) -> str:
        from mammo_pipeline.orchestration.monitor_tasks import fail_on_alert as fail

        return fail(summary)

    summary = compute_report()
    publish_alert(summary) >> fail_on_alert(summary)


mammo_monitor()
