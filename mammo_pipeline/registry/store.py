"""Registry plumbing shared by the registry modules: reading aliases and versions, writing
tags, turning MLflow errors into one-line messages, and who is acting.

All access goes through :func:`mammo_pipeline.common.mlflow_access.mlflow_client`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry.decision import RUN_TAGS_COPIED, TEST_METRICS
from mammo_pipeline.registry.names import MAX_TAG_VALUE, SIGNED_EVALUATION

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion


@contextlib.contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into one-line :class:`MammoError` for the CLI."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MammoError:
        raise
    except MlflowException as exc:
        raise MammoError(f"{what}: {exc.message}") from exc


def is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"} or "not found" in str(exc).lower()


def read_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version of a registered model ({} when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            return {}
        raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def aliases_of(aliases: Mapping[str, str], version: str) -> list[str]:
    return sorted(a for a, v in aliases.items() if v == version)


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if is_not_found(exc):
            raise MammoError(f"model {name!r} has no version {version}") from exc
        raise MammoError(f"cannot read {name!r} version {version}: {exc.message}") from exc


def tag_value(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."


def set_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        if value is None:
            continue
        client.set_model_version_tag(name, version, key, tag_value(value))


def delete_tag(client: MlflowClient, name: str, version: str, key: str) -> None:
    """Remove tag ``key`` from the version; a tag (or version) already gone is fine, any other
    failure (a store that refuses the write, unreachable) raises :class:`MammoError` naming
    what failed: an action that believes a tag is gone must not go on when it is not."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version_tag(name, version, key)
    except MlflowException as exc:
        if is_not_found(exc):
            return
        raise MammoError(f"could not delete tag {key!r} of {name!r} v{version}: {exc}") from exc
    except Exception as exc:
        raise MammoError(
            f"could not delete tag {key!r} of {name!r} v{version}: {type(exc).__name__}: {exc}"
        ) from exc


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


#: Film-level figures of a run copied onto its model version (when it was evaluated on films).
FILM_FACTS: tuple[str, ...] = ("film_threshold", "film_roc_auc", "film_froc_sens_at_1fp", "film_n")


def run_facts(run: Run, run_tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The tags every version carries that come from its training run, plus ``run_tags``
    (what orchestrated it, e.g. ``{"airflow_run_id": ..., "airflow_dag_id": ...}``)."""
    metrics = run.data.metrics
    tags = run.data.tags
    facts: dict[str, Any] = {m: metrics[m] for m in TEST_METRICS if m in metrics}
    if "decision_threshold" in metrics:
        facts["decision_threshold"] = metrics["decision_threshold"]
    elif "decision_threshold" in run.data.params:
        facts["decision_threshold"] = run.data.params["decision_threshold"]
    for key in RUN_TAGS_COPIED:
        if tags.get(key):
            facts[key] = tags[key]
    # the film operating point of /analyze, with how it was chosen (film-level evaluation)
    for key in FILM_FACTS:
        if key in metrics:
            facts[key] = metrics[key]
    if tags.get("film_threshold_method"):
        facts["film_threshold_method"] = tags["film_threshold_method"]
    if tags.get(SIGNED_EVALUATION):  # the record itself; its signature is the authority
        facts[SIGNED_EVALUATION] = tags[SIGNED_EVALUATION]
    facts.update({k: v for k, v in (run_tags or {}).items() if v})
    return facts


def metric_values(run: Run) -> dict[str, Any]:
    return dict(run.data.metrics)
