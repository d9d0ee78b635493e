"""The monitoring report of one served version over a period: figures, alerts, HTML, MLflow.

:func:`monitor_report` reads the version's reference (:mod:`.reference`) and its records of
the period from the store, cuts them into windows (:mod:`.windows`), decides the alerts
(:mod:`.policy`), and (unless told not to) logs a JSON summary and an HTML page with the
plots on the version's training run under ``monitoring/`` and tags the version. A copy of both
is written under ``<reports>/monitoring/``, and one row (the newest window, the alert) in the
store's ``mammo_monitor_reports`` for the dashboards. :func:`apply_retention` deletes what is
older than ``monitor_retention_days``.
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.monitoring import plots
from mammo_pipeline.monitoring.policy import Alert, alert_tags, decide, iso, tag_version
from mammo_pipeline.monitoring.reference import VersionReference, load_reference, served_version
from mammo_pipeline.monitoring.store import open_store, store_exists
from mammo_pipeline.monitoring.windows import (
    TILE_ENDPOINTS,
    WindowFigures,
    evaluate_window,
    performance_of,
    window_bounds,
)

ARTIFACT_DIR: Final = "monitoring"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` -> seconds; :class:`MammoError` otherwise."""
    m = _DURATION.match(text or "")
    if not m or float(m.group(1)) <= 0:
        raise MammoError(f"--since {text!r}: expected a positive duration like 30m, 12h, 7d or 2w")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass
class MonitorReport:
    summary: dict[str, Any]
    html: str
    alerts: list[Alert]
    windows: list[WindowFigures]
    local_html: Path | None = None
    local_json: Path | None = None
    artifacts: list[str] = field(default_factory=list)

    @property
    def alert_reason(self) -> str | None:
        return " | ".join(a.reason for a in self.alerts) or None


def monitor_report(
    settings: Settings,
    since: float | None = None,
    version: str | None = None,
    *,
    until: float | None = None,
    log: bool = True,
) -> MonitorReport:
    """The report of ``version`` (default: the champion) over ``[since, until)`` (default:
    the last ``monitor_since_days``, until now). ``log=False`` writes nothing anywhere."""
    until = time.time() if until is None else float(until)
    since = until - settings.monitor_since_days * 86400 if since is None else float(since)
    if since >= until:
        raise MammoError("the report's period is empty: --since must lie in the past")
    version = served_version(settings, version)
    ref = load_reference(settings, version)
    store = open_store(settings)
    records, labelled = [], []
    if store_exists(settings):
        try:
            kw = {"version": version, "model_name": ref.model_name}
            records = store.records(since, until, **kw)
            labelled = store.labelled(since, until, **kw)
        finally:
            store.close()
    windows = []
    for start, end in window_bounds(since, until, settings.monitor_window_hours):
        in_w = [r for r in records if start <= r.time < end]
        lab_w = [(r, f) for r, f in labelled if start <= r.time < end]
        windows.append(evaluate_window(start, end, in_w, lab_w, ref, settings))
    performance, n_feedback = performance_of(labelled)
    alerts = decide(windows, performance, settings, (since, until))
    summary = _summary(
        settings,
        ref,
        store.describe(),
        records,
        windows,
        performance,
        n_feedback,
        alerts,
        (since, until),
    )
    page = _html(summary, ref, records, settings)
    report = MonitorReport(summary, page, alerts, windows)
    if log:
        _write(settings, ref, report, (since, until))
    return report


def _summary(
    settings: Settings,
    ref: VersionReference,
    store: str,
    records: list,
    windows: list[WindowFigures],
    performance: dict,
    n_feedback: int,
    alerts: list[Alert],
    period: tuple[float, float],
) -> dict[str, Any]:
    declared = sum(1 for r in records if r.inputs.synthetic)
    return {
        "model_name": ref.model_name,
        "model_version": ref.version,
        "run_id": ref.run_id,
        "weights": ref.weights,
        "reference_data": ref.data_label,
        "traffic_declared_synthetic": f"{declared} of {len(records)} records",
        "caption": _caption(ref, records),
        "period": {"start": iso(period[0]), "end": iso(period[1])},
        "store": store,
        "policy": {
            "window_hours": settings.monitor_window_hours,
            "min_window_size": settings.monitor_min_window_size,
            "psi_threshold": settings.monitor_psi_threshold,
            "p_value": settings.monitor_p_value,
            "consecutive_windows": settings.monitor_consecutive_windows,
            "min_recall": settings.min_recall,
        },
        "reference": {
            "tiles": int(ref.tile_scores.size),
            "threshold": ref.threshold,
            "expected_positive_rate": ref.expected_positive_rate,
            "films": None if ref.film_scores is None else int(ref.film_scores.size),
            "film_threshold": ref.film_threshold,
            "inputs": ref.inputs_note,
        },
        "records": len(records),
        "records_by_status": _count(r.status for r in records),
        "records_by_endpoint": _count(r.endpoint for r in records),
        "feedback": n_feedback,
        "performance": {k: v.to_dict() for k, v in performance.items()},
        "windows": [w.to_dict() for w in windows],
        "alert": bool(alerts),
        "alerts": [a.to_dict() for a in alerts],
    }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _caption(ref: VersionReference, records: list) -> str:
    declared = sum(1 for r in records if r.inputs.synthetic)
    return f"{ref.caption()}; traffic: {len(records)} logged records, {declared} declared SYNTHETIC"


def _html(summary: dict[str, Any], ref: VersionReference, records: list, s: Settings) -> str:
    cap = summary["caption"]
    wins = summary["windows"]
    judged = [w for w in wins if w["n_tiles"]]
    latest = judged[-1] if judged else None
    figs: list[tuple[str, bytes]] = []
    if latest is not None:
        scores = np.asarray(
            [
                r.score
                for r in records
                if r.status == "ok"
                and r.endpoint in TILE_ENDPOINTS
                and latest["start"] <= r.time < latest["end"]
            ]
        )
        title = f"Tile scores: reference vs latest window ending {iso(latest['end'])}"
        figs.append(
            ("scores", plots.score_histograms(ref.tile_scores, scores, ref.threshold, cap, title))
        )
        if ref.inputs is not None:
            vals = np.asarray(
                [
                    r.inputs.input_mean
                    for r in records
                    if r.inputs.input_mean is not None and latest["start"] <= r.time < latest["end"]
                ]
            )
            figs.append(
                (
                    "input mean",
                    plots.input_histograms(ref.inputs["input_mean"], vals, "input_mean", cap),
                )
            )
    figs.append(("drift", plots.drift_over_windows(wins, s.monitor_psi_threshold, cap)))
    figs.append(
        (
            "positive rate",
            plots.intervals_over_windows(
                wins,
                "positive_rate",
                "Positive rate per window (Wilson interval)",
                ref.expected_positive_rate,
                "expected (held-out test set)",
                cap,
            ),
        )
    )
    figs.append(
        (
            "sensitivity",
            plots.intervals_over_windows(
                wins,
                "sensitivity",
                "Realised sensitivity per window (95% Wilson, from feedback)",
                s.min_recall,
                f"min_recall {s.min_recall:g}",
                cap,
            ),
        )
    )
    alert = (
        "<p class=alert><b>ALERT</b>: "
        + html.escape(" | ".join(a["reason"] for a in summary["alerts"]))
        + "</p>"
        if summary["alert"]
        else "<p class=ok>No alert.</p>"
    )
    perf = "".join(
        f"<li>{k}: {html.escape(_iv(v))}</li>" for k, v in summary["performance"].items()
    )
    imgs = "".join(
        f'<h2>{html.escape(n)}</h2><img alt="{html.escape(n)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}">'
        for n, png in figs
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Monitoring "
        f"{html.escape(ref.model_name)} v{html.escape(ref.version)}</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:auto}.alert{color:#b00}"
        ".ok{color:#070}img{max-width:100%}</style></head><body>"
        f"<h1>Monitoring {html.escape(ref.model_name)} v{html.escape(ref.version)}</h1>"
        f"<p>{html.escape(cap)}</p><p>Period {summary['period']['start']} to "
        f"{summary['period']['end']}, {summary['records']} records, {summary['feedback']} with "
        f"feedback; store: {html.escape(summary['store'])}.</p>{alert}"
        f"<h2>Realised performance over the period</h2><ul>{perf}</ul>{imgs}"
        f"<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1))}</pre>"
        "</body></html>"
    )


def _iv(d: dict[str, Any]) -> str:
    if d["point"] is None:
        return f"undefined (n={d['n']})"
    return f"{d['point']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n']})"


def _write(
    settings: Settings, ref: VersionReference, report: MonitorReport, period: tuple[float, float]
) -> None:
    from mammo_pipeline.common.mlflow_access import mlflow_client

    stamp = datetime.fromtimestamp(period[1], UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"report-v{ref.version}-{stamp}"
    local = settings.reports / "monitoring"
    local.mkdir(parents=True, exist_ok=True)
    report.local_json = local / f"{base}.json"
    report.local_html = local / f"{base}.html"
    report.local_json.write_text(json.dumps(report.summary, indent=1))
    report.local_html.write_text(report.html)
    client = mlflow_client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        for name in (f"{base}.json", f"{base}.html"):
            src = local / name
            for target in (name, "latest" + src.suffix):
                dst = Path(tmp) / target
                dst.write_bytes(src.read_bytes())
                client.log_artifact(ref.run_id, str(dst), ARTIFACT_DIR)
                report.artifacts.append(f"{ARTIFACT_DIR}/{target}")
    tag_version(settings, ref.version, alert_tags(report.alerts, period))
    store = open_store(settings)
    try:
        store.add_report(report_row(report, period[1]))
    finally:
        store.close()


def report_row(report: MonitorReport, at: float) -> dict[str, Any]:
    """The report's row of ``mammo_monitor_reports``: its newest window and the alert."""
    s = report.summary
    sens = s["performance"].get("sensitivity") or {}
    row: dict[str, Any] = {
        "ts": at,
        "model_name": s["model_name"],
        "model_version": s["model_version"],
        "alert": int(bool(report.alerts)),
        "alert_reason": report.alert_reason,
        "expected_positive_rate": s["reference"]["expected_positive_rate"],
        "n_feedback": s["feedback"],
        "sensitivity": sens.get("point"),
        "sensitivity_low": sens.get("low"),
        "sensitivity_high": sens.get("high"),
    }
    if report.windows:
        w = report.windows[-1]
        row.update(window_start=w.start, window_end=w.end, n_tiles=w.n_tiles)
        row.update(sufficient=int(w.sufficient), drifts=int(w.drifts))
        for name, test in [("score", w.score_drift), *((t.name, t) for t in w.input_drift)]:
            if test is not None:
                row[f"{name}_psi"], row[f"{name}_p_value"] = test.psi, test.p_value
        if w.positive_rate is not None:
            row["positive_rate"] = w.positive_rate.interval.point
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}


def apply_retention(settings: Settings, now: float | None = None) -> dict[str, int]:
    """Delete records (and their feedback) older than ``monitor_retention_days``."""
    if not store_exists(settings):
        return {"records": 0, "feedback": 0}
    cutoff = (time.time() if now is None else now) - settings.monitor_retention_days * 86400
    store = open_store(settings)
    try:
        return store.purge(cutoff)
    finally:
        store.close()
