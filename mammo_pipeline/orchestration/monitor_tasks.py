"""What the ``mammo_monitor`` DAG calls: one function per task, JSON in and out.

``compute_report`` applies the retention, computes and logs the monitoring report of the
served version (:func:`mammo_pipeline.monitoring.report.monitor_report`) and returns its
summary. ``alert_or_skip`` lets the Asset-publishing task through only when there is an alert
(else it skips, saying why: no Asset event, no retraining); ``fail_on_alert`` fails a visible
task with the alert's reason. Nothing served means nothing to monitor: a skip, not a failure.
"""

from __future__ import annotations

from typing import Any, NoReturn

from mammo_pipeline.config import get_settings


def _skip(reason: str) -> NoReturn:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)


def _fail(reason: str) -> NoReturn:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(reason)


def compute_report() -> dict[str, Any]:
    """Retention, then the report of the champion over ``monitor_since_days`` (logged to
    MLflow under ``monitoring/``, the version tagged). Returns the JSON summary with the
    artifact paths; skips when no version is served."""
    from mammo_pipeline.monitoring.reference import MonitorError
    from mammo_pipeline.monitoring.report import apply_retention, monitor_report

    settings = get_settings()
    purged = apply_retention(settings)
    try:
        report = monitor_report(settings)
    except MonitorError as exc:
        if "has no champion" in str(exc):
            _skip(str(exc))
        raise
    return {
        **report.summary,
        "purged": purged,
        "report_html": str(report.local_html) if report.local_html else None,
        "artifacts": report.artifacts,
        "alert_reason": report.alert_reason,
    }


def alert_or_skip(summary: dict[str, Any]) -> dict[str, Any]:
    """The alert to publish as an Asset event; skip when there is none."""
    if not summary.get("alert"):
        _skip(f"no alert for v{summary.get('model_version')}: nothing to publish")
    return {
        "model_name": summary["model_name"],
        "model_version": summary["model_version"],
        "alerts": summary["alerts"],
        "report": summary.get("report_html"),
    }


def fail_on_alert(summary: dict[str, Any]) -> str:
    """Fail with the alert's reason (the run shows red); the one-line OK otherwise."""
    if summary.get("alert"):
        _fail(
            f"monitoring alert on {summary['model_name']} v{summary['model_version']}: "
            f"{summary.get('alert_reason')} (report: {summary.get('report_html')})"
        )
    return f"v{summary.get('model_version')}: no alert ({summary.get('records')} records)"
