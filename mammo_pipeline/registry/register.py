"""Registering a training run's model as a version of the registered model (idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.compat import before_registering_logged_model
from mammo_pipeline.common.mlflow_access import mlflow_client
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.names import Tag, Verdict
from mammo_pipeline.registry.store import escape, mlflow_errors, run_facts, set_tags, tag_value
from mammo_pipeline.training.run_logging import MODEL_NAME_IN_RUN

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version; ``created`` is False when the run was already registered."""

    name: str
    version: str
    run_id: str
    model_id: str | None = None
    source: str | None = None
    created: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _find_logged_model(client: MlflowClient, run: Run) -> tuple[str | None, str]:
    """(model_id, source URI) of the model logged by ``run`` under the name ``model``.

    MLflow 3 stores a model as a LoggedModel linked to the run (``models:/<model_id>``), not
    under the run's artifacts; a run logged the MLflow 2 way (``model/MLmodel`` among the run
    artifacts) is registered from ``runs:/<run_id>/model``.
    """
    from mlflow.entities import LoggedModelStatus

    run_id = run.info.run_id
    found = list(
        client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{escape(run_id)}'",
        )
    )
    named = [m for m in found if m.name == MODEL_NAME_IN_RUN]
    if named:
        steps = {}
        if run.outputs is not None:
            steps = {o.model_id: o.step for o in run.outputs.model_outputs}
        best = max(named, key=lambda m: (steps.get(m.model_id, -1), m.creation_timestamp or 0))
        if best.status != LoggedModelStatus.READY:
            raise MammoError(
                f"run {run_id}: logged model {best.model_id} is {best.status}, not READY "
                "(did the training task fail while saving the model?)"
            )
        return best.model_id, f"models:/{best.model_id}"
    legacy = [a.path for a in client.list_artifacts(run_id, MODEL_NAME_IN_RUN)]
    if f"{MODEL_NAME_IN_RUN}/MLmodel" in legacy:
        return None, f"runs:/{run_id}/{MODEL_NAME_IN_RUN}"
    raise MammoError(
        f"run {run_id} has no logged model named {MODEL_NAME_IN_RUN!r} "
        f"(found: {', '.join(m.name for m in found) or 'none'})"
    )


def _versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    found = client.search_model_versions(f"name = '{escape(name)}' and run_id = '{escape(run_id)}'")
    return sorted(found, key=lambda mv: int(mv.version))


def register_run(
    settings: Settings | None, run_id: str, run_tags: Mapping[str, str] | None = None
) -> ModelVersionRef:
    """Register the model of training run ``run_id`` as a version of the registered model,
    with the run's facts and ``run_tags`` (what orchestrated it, e.g. the Airflow run id).

    Idempotent: when a version of this run already exists (a retried Airflow task), that
    version is returned (``created=False``) and its tags are refreshed; no second version.
    """
    from mlflow.exceptions import MlflowException

    s = settings or get_settings()
    name = s.registered_model_name
    client = mlflow_client(s)
    before_registering_logged_model(s)  # upstream bug: see mammo_pipeline.common.compat
    with mlflow_errors(f"registering run {run_id} as {name!r}"):
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise MammoError(f"run {run_id} not found at {s.mlflow_tracking_uri}") from exc
        existing = _versions_of_run(client, name, run_id)
        created = not existing
        if existing:
            mv = existing[0]
            source = mv.source
            model_id = getattr(mv, "model_id", None) or (
                source.removeprefix("models:/") if source.startswith("models:/m-") else None
            )
            if len(existing) > 1:
                log.warning(
                    "run %s has %d versions of %s; using v%s",
                    run_id,
                    len(existing),
                    name,
                    mv.version,
                )
        else:
            model_id, source = _find_logged_model(client, run)
            try:
                client.create_registered_model(
                    name, description="VGG16 mammogram lesion classifier (mammo-mlops)"
                )
            except MlflowException as exc:
                if exc.error_code not in {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}:
                    raise
            facts = run_facts(run, run_tags)
            facts[Tag.GATE] = Verdict.PENDING
            mv = client.create_model_version(
                name,
                source=source,
                run_id=run_id,
                tags={k: tag_value(v) for k, v in facts.items()},
                model_id=model_id,
                description=f"training run {run_id}",
            )
            # Lost race with a concurrent retry: keep the oldest version of this run only.
            again = _versions_of_run(client, name, run_id)
            if again and again[0].version != mv.version:
                client.delete_model_version(name, mv.version)
                mv, created = again[0], False
        version = str(mv.version)
        facts = run_facts(run, run_tags)
        if "gate" not in (mv.tags or {}):
            facts[Tag.GATE] = Verdict.PENDING
        set_tags(client, name, version, facts)
        client.set_tag(run_id, "registered_model_version", f"{name}/{version}")
    return ModelVersionRef(name, version, run_id, model_id, source, created)
