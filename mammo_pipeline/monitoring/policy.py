"""What counts as an alert, and what an alert writes on the model version.

An alert is raised (settings ``MAMMO_MONITOR_*``, docs/monitoring.md) when

- **drift**: the last ``monitor_consecutive_windows`` judged windows (those with at least
  ``monitor_min_window_size`` scored tiles) all drift (:mod:`.windows`); or
- **sensitivity**: the upper bound of the realised sensitivity's 95% Wilson interval over the
  report's period is below ``min_recall`` (the gate's own threshold): with the outcomes known,
  even the most favourable reading of the evidence says the model misses too many lesions.

An alert tags the version ``monitoring=alert`` with ``monitoring_reason``,
``monitoring_window`` and ``monitoring_at`` (a report without one tags ``monitoring=ok``),
and the ``mammo_monitor`` DAG publishes the Airflow Asset :data:`MONITOR_ALERT_ASSET`, on
which ``mammo_retrain`` is scheduled when ``MAMMO_RETRAIN_ON_ALERT`` is set. Monitoring
never promotes anything: a retrained candidate goes through the full gate.

Light at import time: the DAG files read :data:`MONITOR_ALERT_ASSET` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from mammo_pipeline.config import Settings

if TYPE_CHECKING:
    from mammo_pipeline.monitoring.windows import WindowFigures
    from mammo_pipeline.stats.intervals import Interval

MONITOR_ALERT_ASSET: Final = "mammo://monitoring/alert"
MONITORING_TAG: Final = "monitoring"
REASON_TAG: Final = "monitoring_reason"
WINDOW_TAG: Final = "monitoring_window"
AT_TAG: Final = "monitoring_at"
ALERT: Final = "alert"
OK: Final = "ok"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class Alert:
    kind: str  # "drift" or "sensitivity"
    reason: str
    window: str  # "START/END" in UTC

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "window": self.window}


def decide(
    windows: list[WindowFigures],
    performance: dict[str, Interval],
    settings: Settings,
    period: tuple[float, float],
) -> list[Alert]:
    """The alerts of a report (empty: none). ``performance`` is over the whole ``period``."""
    alerts: list[Alert] = []
    n = settings.monitor_consecutive_windows
    judged = [w for w in windows if w.sufficient]
    last = judged[-n:]
    if len(last) == n and all(w.drifts for w in last):
        alerts.append(
            Alert(
                kind="drift",
                reason=f"drift in {n} consecutive window(s) of "
                f"{settings.monitor_window_hours:g} h; latest: "
                + "; ".join(last[-1].drift_reasons),
                window=f"{iso(last[0].start)}/{iso(last[-1].end)}",
            )
        )
    sens = performance.get("sensitivity")
    if sens is not None and sens.defined and sens.high < settings.min_recall:
        alerts.append(
            Alert(
                kind="sensitivity",
                reason=f"realised sensitivity {sens.describe()}: upper bound below "
                f"min_recall {settings.min_recall:g}",
                window=f"{iso(period[0])}/{iso(period[1])}",
            )
        )
    return alerts


def alert_tags(alerts: list[Alert], period: tuple[float, float]) -> dict[str, str]:
    """The version tags a report writes."""
    from mammo_pipeline.registry.names import MAX_TAG_VALUE

    if not alerts:
        return {
            MONITORING_TAG: OK,
            REASON_TAG: "",
            WINDOW_TAG: f"{iso(period[0])}/{iso(period[1])}",
            AT_TAG: iso(period[1]),
        }
    return {
        MONITORING_TAG: ALERT,
        REASON_TAG: " | ".join(a.reason for a in alerts)[:MAX_TAG_VALUE],
        WINDOW_TAG: alerts[0].window,
        AT_TAG: iso(period[1]),
    }


def tag_version(settings: Settings, version: str, tags: dict[str, str]) -> None:
    """Write the report's tags on the model version."""
    from mammo_pipeline.common.mlflow_access import mlflow_client
    from mammo_pipeline.registry.store import set_tags

    set_tags(mlflow_client(settings), settings.registered_model_name, version, tags)
