"""Reading the registry for people: the version list and one version beside the champion
(:class:`ReviewContext`, rendered by :mod:`.report_html` and ``mammo registry show``)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.jsonsafe import clean
from mammo_pipeline.common.mlflow_access import mlflow_client, quiet_artifact_downloads
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.registry.decision import RUN_TAGS_COPIED, GateDecision
from mammo_pipeline.registry.names import (
    CHAMPION,
    LIST_METRICS,
    MAX_EMBEDDED_IMAGE_BYTES,
    PLOT_ARTIFACTS,
    REVIEW_DIR,
    Tag,
    Verdict,
)
from mammo_pipeline.registry.report_html import ReviewContext
from mammo_pipeline.registry.state import VersionState, state_of
from mammo_pipeline.registry.store import (
    aliases_of,
    escape,
    get_version,
    metric_values,
    mlflow_errors,
    read_aliases,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRow:
    """One line of ``mammo registry list``."""

    version: str
    aliases: list[str]
    gate: str
    review: str
    metrics: dict[str, float | None]
    run_id: str | None
    created: str
    #: May it be served (the tags' rule and the signed decision), and if not, why.
    vetted: bool = False
    not_vetted_because: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = clean(self.metrics)
        return d


def list_versions(settings: Settings | None = None) -> list[VersionRow]:
    """All versions, newest first, with aliases, gate verdict and key metrics (from the runs)."""
    from datetime import UTC, datetime

    s = settings or get_settings()
    name = s.registered_model_name
    client = mlflow_client(s)
    rows: list[VersionRow] = []
    with mlflow_errors(f"listing {name!r}"):
        aliases = read_aliases(client, name)
        versions = client.search_model_versions(f"name = '{escape(name)}'")
        for mv in sorted(versions, key=lambda m: int(m.version), reverse=True):
            metrics: dict[str, Any] = {}
            if mv.run_id:
                try:
                    metrics = metric_values(client.get_run(mv.run_id))
                except Exception:
                    metrics = {}
            state = state_of(s, mv, aliases_of(aliases, str(mv.version)), verify=True)
            created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC)
            rows.append(
                VersionRow(
                    version=str(mv.version),
                    aliases=list(state.aliases),
                    gate=state.gate_label,
                    review=state.review_label,
                    metrics={m: metrics.get(m) for m in LIST_METRICS},
                    run_id=mv.run_id,
                    created=created.strftime("%Y-%m-%d %H:%M"),
                    vetted=state.vetted,
                    not_vetted_because=state.vetting_problem(),
                )
            )
    return rows


def gate_decision_from_tags(tags: Mapping[str, str]) -> GateDecision | None:
    """The last automatic decision, rebuilt from the version's tags (also after approval)."""
    state = VersionState.of("?", tags)
    verdict = state.auto_verdict
    raw = tags.get(Tag.GATE_CHECKS)
    if not raw or verdict not in {Verdict.PASSED, Verdict.FAILED}:
        return None
    try:
        checks = json.loads(raw)
    except ValueError:
        return None
    champion = tags.get(Tag.GATE_CHAMPION_VERSION)
    return GateDecision.from_dict(
        {
            "passed": verdict == Verdict.PASSED,
            "checks": checks,
            "reasons": [] if verdict == Verdict.PASSED else state.auto_reasons.split("; "),
            "champion_version": None if champion in {None, "none"} else champion,
            "evaluated_at": state.gate_at,
        }
    )


def _decision_artifact(
    client: MlflowClient, run_id: str | None, version: str
) -> GateDecision | None:
    """The last gate decision with its statistics (``review/gate_decision-<V>.json``)."""
    if not run_id:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
            path = client.download_artifacts(
                run_id, f"{REVIEW_DIR}/gate_decision-{version}.json", tmp
            )
            return GateDecision.from_dict(json.loads(Path(path).read_text()))
    except Exception:  # noqa: BLE001 - no report yet: the tags are the record
        return None


def _artifact_links(settings: Settings, client: MlflowClient, run: Run) -> dict[str, str]:
    """name -> where to open it: the UI for a remote server, the artifact URI otherwise."""
    uri = settings.mlflow_tracking_uri
    run_id = run.info.run_id
    links: dict[str, str] = {}
    files: list[str] = []
    try:
        top = client.list_artifacts(run_id)
        files = [a.path for a in top if not a.is_dir]
        for folder in (a.path for a in top if a.is_dir):  # evaluation/, review/, data/
            files += [a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir]
    except Exception:
        log.warning("cannot list the artifacts of run %s", run_id)
    for path in files:
        if not path.endswith((".png", ".html", ".json")):
            continue
        if uri.startswith(("http://", "https://")):
            links[path] = (
                f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
                f"/artifacts/{path}"
            )
        else:
            links[path] = f"{run.info.artifact_uri.rstrip('/')}/{path}"
    return links


def review_context(
    settings: Settings | None,
    version: str | int,
    decision: GateDecision | None = None,
    *,
    with_images: bool = False,
) -> ReviewContext:
    """The version beside the champion, metric by metric, with links to its plots."""
    s = settings or get_settings()
    name = s.registered_model_name
    version = str(version)
    client = mlflow_client(s)
    with mlflow_errors(f"reading {name!r} v{version}"):
        mv = get_version(client, name, version)
        aliases = read_aliases(client, name)
        tags = dict(mv.tags or {})
        run = client.get_run(mv.run_id) if mv.run_id else None
        if run is not None:
            for k, v in run.data.tags.items():
                if k in RUN_TAGS_COPIED:
                    tags.setdefault(k, v)
        champ = aliases.get(CHAMPION)
        if decision is not None:
            champ = decision.champion_version or (champ if champ != version else None)
        if champ == version:
            champ = None
        champ_metrics: dict[str, Any] = {}
        if champ is not None:
            try:
                cmv = client.get_model_version(name, champ)
                if cmv.run_id:
                    champ_metrics = metric_values(client.get_run(cmv.run_id))
            except Exception:
                champ_metrics = {}
        images: dict[str, bytes] = {}
        links = _artifact_links(s, client, run) if run is not None else {}
        if with_images and run is not None:
            images = _download_plots(client, run.info.run_id, links)
    return ReviewContext(
        model_name=name,
        version=version,
        run_id=mv.run_id,
        aliases=aliases_of(aliases, version),
        tags=tags,
        candidate_metrics=metric_values(run) if run is not None else {},
        champion_version=champ,
        champion_metrics=champ_metrics,
        min_precision=decision.min_precision
        if decision and decision.min_precision is not None
        else s.min_precision,
        min_recall=decision.min_recall
        if decision and decision.min_recall is not None
        else s.min_recall,
        tolerance=s.regression_tolerance,
        decision=decision
        if decision is not None
        else (_decision_artifact(client, mv.run_id, version) or gate_decision_from_tags(tags)),
        images=images,
        links=links,
    )


def _download_plots(
    client: MlflowClient, run_id: str, links: Mapping[str, str]
) -> dict[str, bytes]:
    images: dict[str, bytes] = {}
    wanted = [p for p in links if p.endswith(".png") and not p.startswith(REVIEW_DIR + "/")]
    wanted.sort(key=lambda p: (p not in PLOT_ARTIFACTS, p))
    with tempfile.TemporaryDirectory() as tmp, quiet_artifact_downloads():
        for path in wanted[:8]:
            try:
                local = Path(client.download_artifacts(run_id, path, tmp))
            except Exception as exc:
                log.warning("cannot download %s of run %s: %s", path, run_id, exc)
                continue
            if local.stat().st_size <= MAX_EMBEDDED_IMAGE_BYTES:
                images[path] = local.read_bytes()
    return images
