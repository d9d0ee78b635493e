"""The HTML review report of a version, logged on its training run under ``review/``."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.decision import GateDecision
from mammo_pipeline.registry.names import REVIEW_DIR, Tag, Verdict
from mammo_pipeline.registry.report_html import render_html
from mammo_pipeline.registry.store import mlflow_errors, tag_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def report_artifact_path(version: str) -> str:
    return f"{REVIEW_DIR}/version-{version}.html"


def write_review_report(
    settings: Settings | None, version: str | int, decision: GateDecision | None = None
) -> str:
    """Render the review report and log it (plus ``gate_decision-<V>.json``) on the run.

    Returns the artifact path of the report under the run.
    """
    s = settings or get_settings()
    from mammo_pipeline.registry.listing import review_context

    client = mlflow_client(s)
    version = str(version)
    ctx = review_context(s, version, decision, with_images=True)
    if ctx.run_id is None:
        raise MammoError(f"v{version} has no run to attach the report to")
    html_text = render_html(ctx)
    with tempfile.TemporaryDirectory() as tmp, mlflow_errors("writing the review report"):
        page = Path(tmp) / f"version-{version}.html"
        page.write_text(html_text, encoding="utf-8")
        client.log_artifact(ctx.run_id, str(page), artifact_path=REVIEW_DIR)
        if ctx.decision is not None:
            js = Path(tmp) / f"gate_decision-{version}.json"
            js.write_text(ctx.decision.to_json(), encoding="utf-8")
            client.log_artifact(ctx.run_id, str(js), artifact_path=REVIEW_DIR)
        client.set_tag(ctx.run_id, Tag.GATE, ctx.state.gate or Verdict.PENDING)
        client.set_tag(ctx.run_id, "review_report", report_artifact_path(version))
    return report_artifact_path(version)


def write_report_safely(
    client: MlflowClient,
    settings: Settings,
    version: str,
    decision: GateDecision | None,
    notes: list[str],
) -> str | None:
    """The report is for people; failing to write it must not block a decision already taken
    (the tags carry it). The failure is recorded as a version tag and a note."""
    try:
        return write_review_report(settings, version, decision)
    except Exception as exc:
        msg = f"review report not written: {type(exc).__name__}: {exc}"
        log.warning(msg)
        notes.append(msg)
        with contextlib.suppress(Exception):
            client.set_model_version_tag(
                settings.registered_model_name, version, "review_report_error", tag_value(msg)
            )
        return None
