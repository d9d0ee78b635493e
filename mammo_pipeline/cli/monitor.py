"""``mammo monitor``: the monitoring report, the current window, bulk outcome feedback.

- ``report [--since 7d] [--version V] [--json] [--no-log]``: the report of the served version
  (or V) over the period; logged on its run under ``monitoring/`` and tagging the version
  (``--no-log``: print only). Exit 0 either way; an alert is printed, not a refusal.
- ``status [--version V] [--json]``: the current window's figures in the terminal
  (nothing logged, no tag written).
- ``feedback FILE.csv``: outcomes in bulk (``request_id,outcome,source[,who][,time]``), all
  or nothing, idempotent per request id; ``who`` defaults to the authenticated user.

Refusals (no registry, no champion, a bad file or value, an unknown request id, a conflicting
outcome) are one ``error:`` line and exit 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mammo_pipeline.config import Settings

app = typer.Typer(
    help="Monitoring of the served model: report, current window, outcome feedback.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    from mammo_pipeline.cli.store import existing_store_settings

    return existing_store_settings()


def _iv(d: dict[str, Any] | None) -> str:
    if not d or d.get("point") is None:
        return f"undefined (n={d['n'] if d else 0})"
    return f"{d['point']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n']})"


def _print_window(w: dict[str, Any]) -> None:
    from mammo_pipeline.monitoring.policy import iso

    state = "DRIFT" if w["drifts"] else ("ok" if w["sufficient"] else "too few to judge")
    typer.echo(
        f"  window {iso(w['start'])} .. {iso(w['end'])}: {w['n_records']} records "
        f"({w['n_tiles']} tiles, {w['n_films']} films, {w['n_failed']} failed): {state}"
    )
    if w["score_drift"]:
        d = w["score_drift"]
        typer.echo(f"    tile score PSI {d['psi']:.3f}, KS p={d['p_value']:.2g}")
    for d in w["input_drift"]:
        typer.echo(f"    {d['name']} PSI {d['psi']:.3f}, KS p={d['p_value']:.2g}")
    if w["positive_rate"]:
        r = w["positive_rate"]
        typer.echo(f"    positive rate {_iv(r['rate'])} vs expected {r['expected']:.3f}")
    for k, v in w["performance"].items():
        if v["n"]:
            typer.echo(f"    realised {k} {_iv(v)}")
    for reason in w["drift_reasons"]:
        typer.echo(f"    drift: {reason}")


def _print(summary: dict[str, Any], windows: list[dict[str, Any]]) -> None:
    typer.echo(
        f"{summary['model_name']} v{summary['model_version']}: {summary['records']} records, "
        f"{summary['feedback']} with feedback, {summary['period']['start']} .. "
        f"{summary['period']['end']} ({summary['store']})"
    )
    typer.echo(f"  {summary['caption']}")
    for w in windows:
        _print_window(w)
    for k, v in summary["performance"].items():
        typer.echo(f"  period: realised {k} {_iv(v)}")
    for a in summary["alerts"]:
        typer.secho(f"ALERT ({a['kind']}, {a['window']}): {a['reason']}", fg=typer.colors.RED)
    if not summary["alerts"]:
        typer.echo("no alert")


@app.command("report")
def report_cmd(
    since: Annotated[str, typer.Option(help="period, e.g. 12h, 7d, 2w")] = "",
    version: Annotated[str | None, typer.Option(help="model version (default: champion)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON summary")] = False,
    no_log: Annotated[bool, typer.Option("--no-log", help="log nothing, tag nothing")] = False,
) -> None:
    """Drift, positive rate and realised performance per window, against the version's own
    held-out reference; logged to MLflow under monitoring/ with an HTML page of plots."""
    from mammo_pipeline.monitoring.report import monitor_report, parse_duration

    s = _settings()
    start = time.time() - parse_duration(since) if since else None
    report = monitor_report(s, start, version, log=not no_log)
    if as_json:
        typer.echo(json.dumps(report.summary, indent=1))
        return
    _print(report.summary, report.summary["windows"])
    if report.local_html is not None:
        typer.echo(
            f"report: {report.local_html} (and on run {report.summary['run_id']} under monitoring/)"
        )


@app.command("status")
def status_cmd(
    version: Annotated[str | None, typer.Option(help="model version (default: champion)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The current window's figures (one window of MAMMO_MONITOR_WINDOW_HOURS); writes nothing."""
    from mammo_pipeline.monitoring.report import monitor_report

    s = _settings()
    now = time.time()
    report = monitor_report(s, now - s.monitor_window_hours * 3600, version, until=now, log=False)
    if as_json:
        typer.echo(json.dumps(report.summary, indent=1))
        return
    _print(report.summary, report.summary["windows"][-1:])


@app.command("feedback")
def feedback_cmd(
    file: Annotated[Path, typer.Argument(help="CSV: request_id,outcome,source[,who][,time]")],
) -> None:
    """Load outcomes (malignant|benign|normal from biopsy|follow-up|reader) in bulk."""
    from mammo_pipeline.config import get_settings
    from mammo_pipeline.monitoring.feedback import read_feedback_csv
    from mammo_pipeline.monitoring.store import open_store, store_exists
    from mammo_pipeline.registry.identity import cli_identity

    s = get_settings()  # the prediction log, not the registry
    rows = read_feedback_csv(file, cli_identity(s).name)
    if not store_exists(s):
        from mammo_pipeline.errors import MammoError

        raise MammoError("no prediction log yet: nothing was predicted to give feedback on")
    store = open_store(s)
    try:
        counts = store.add_feedback(rows)
    finally:
        store.close()
    typer.echo(
        f"{file}: {counts['added']} outcome(s) recorded, {counts['unchanged']} already "
        f"recorded ({store.describe()})"
    )


def register(main_app: typer.Typer) -> None:
    """Add ``mammo monitor ...`` to the top-level app."""
    main_app.add_typer(app, name="monitor")
