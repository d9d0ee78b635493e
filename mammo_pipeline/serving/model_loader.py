"""Resolve the model version to serve in the MLflow registry, import it into the BentoML model
store (tag ``<name>:v<registry version>``) and load it.

The version is ``settings.serve_version`` (``MAMMO_SERVE_VERSION``) when set, else the one the
``champion`` alias points at. The BentoML model store is BentoML's own (``BENTOML_HOME``),
which every service process gets from :func:`mammo_pipeline.common.environment.settings_env`
(``settings.bentoml_store``); only BentoML's public ``bentoml.models`` API is used. Importing
is idempotent: a store entry whose ``mlflow_run_id`` label matches is reused, one from another
registry with the same version number is replaced.

Before serving, the version's signed decision must verify against the trusted keys
(:func:`mammo_pipeline.registry.attestation.verified_decision`) and the files loaded from the
BentoML store must have the digest it signed (:func:`require_signed_files`).

Operating points: ``decision_threshold`` is the tile threshold (``/predict``);
``film_threshold`` is the whole-film threshold of ``/analyze`` with its method
(``film_validation`` or ``window_corrected``, see
:mod:`mammo_pipeline.training.film_eval`). A version evaluated before film-level evaluation
has none: it falls back to the tile threshold, flagged ``tile_fallback``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammo_pipeline.common.jsonsafe import finite_or_none
from mammo_pipeline.common.mlflow_access import mlflow_client, use_store
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError, MammoError
from mammo_pipeline.registry.attestation import verified_decision
from mammo_pipeline.registry.names import CHAMPION
from mammo_pipeline.registry.vetting import vetting_problem

if TYPE_CHECKING:
    from bentoml import Model as BentoModel

MLFLOW_SUBDIR = "mlflow_model"
#: Method name when a version has no film threshold and /analyze uses the tile threshold.
TILE_FALLBACK = "tile_fallback"


@dataclass(frozen=True)
class ModelInfo:
    """What the service reports about the model it serves (``GET /model``)."""

    name: str
    version: str
    run_id: str
    aliases: list[str]
    decision_threshold: float
    image_size: int
    metrics: dict[str, float] = field(default_factory=dict)
    trained_at: str | None = None
    bento_tag: str | None = None
    #: the threshold /analyze applies to the film score, and how it was chosen
    film_threshold: float | None = None
    film_threshold_method: str = TILE_FALLBACK
    #: the model files' digest the signed decision vouches for, and the key that signed it
    model_sha256: str | None = None
    signed_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def film_operating_point(self) -> dict[str, Any]:
        """``{"threshold", "method"}`` of /analyze (the tile threshold when flagged fallback)."""
        if self.film_threshold is None:
            return {"threshold": self.decision_threshold, "method": TILE_FALLBACK}
        return {"threshold": self.film_threshold, "method": self.film_threshold_method}


def resolve_version(settings: Settings, version: str | int | None = None) -> str:
    """The registry version to serve: explicit, ``MAMMO_SERVE_VERSION``, else ``@champion``."""
    from mlflow.exceptions import MlflowException

    name = settings.registered_model_name
    chosen = version if version is not None else settings.serve_version
    client = mlflow_client(settings)
    try:
        if chosen is not None:
            return str(client.get_model_version(name, str(chosen)).version)
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        what = f"version {chosen}" if chosen is not None else f"alias '{CHAMPION}'"
        raise ConfigError(
            f"registered model '{name}' has no {what} in {settings.mlflow_tracking_uri}: "
            f"{exc.message}"
        ) from None


def describe_version(settings: Settings, version: str) -> ModelInfo:
    """Metadata of one registry version: threshold, test metrics, aliases, trained-at."""
    import mlflow

    use_store(settings)
    name = settings.registered_model_name
    client = mlflow_client(settings)
    mv = client.get_model_version(name, version)
    problem = vetting_problem(str(mv.version), mv.tags or {})
    if problem:  # a hand-moved alias is not enough to be served
        raise ConfigError(f"refusing to serve {name}: {problem}")
    signed = verified_decision(settings, name, str(mv.version), mv.run_id, mv.tags or {})
    if isinstance(signed, str):  # nor a hand-written tag: the signature is the authority
        raise ConfigError(f"refusing to serve {name}: {signed}")
    run = client.get_run(mv.run_id) if mv.run_id else None
    run_metrics = dict(run.data.metrics) if run else {}
    tags = dict(mv.tags or {})

    metrics: dict[str, float] = {}
    for key, value in {**run_metrics, **tags}.items():
        if key.startswith("test_") and (num := finite_or_none(value)) is not None:
            metrics[key] = num

    metadata: dict[str, Any] = {}
    try:
        info = mlflow.models.get_model_info(f"models:/{name}/{version}")
        metadata = dict(info.metadata or {})
    except Exception:  # noqa: BLE001 - metadata is optional, tags/metrics come first
        metadata = {}

    threshold = finite_or_none(tags.get("decision_threshold"))
    if threshold is None:
        threshold = finite_or_none(run_metrics.get("decision_threshold"))
    if threshold is None:
        threshold = finite_or_none(metadata.get("decision_threshold"))
    if threshold is None:
        raise MammoError(f"{name} version {version} has no decision_threshold (tag or metric)")
    size = metadata.get("image_size")
    image_size = int(size) if size is not None else settings.image_size
    film_threshold = finite_or_none(tags.get("film_threshold"))
    if film_threshold is None:
        film_threshold = finite_or_none(run_metrics.get("film_threshold"))
    method = tags.get("film_threshold_method") or (
        run.data.tags.get("film_threshold_method") if run is not None else None
    )
    if film_threshold is None or not method:
        film_threshold, method = None, TILE_FALLBACK

    trained_at = None
    if run is not None and run.info.start_time:
        trained_at = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC).isoformat()
    return ModelInfo(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        aliases=sorted(mv.aliases or []),
        decision_threshold=threshold,
        image_size=image_size,
        metrics=metrics,
        trained_at=trained_at,
        film_threshold=film_threshold,
        film_threshold_method=method,
        model_sha256=str(signed.payload["model_sha256"]),
        signed_by=signed.key_id,
    )


def bento_tag(settings: Settings, version: str) -> str:
    """BentoML tag of a registry version: ``<sanitised name>:v<version>``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", settings.registered_model_name.lower()).strip("-._")
    return f"{name or 'model'}:v{version}"


def import_version(settings: Settings, info: ModelInfo) -> BentoModel:
    """Copy the MLflow model of ``info`` into the BentoML store (idempotent); returns it."""
    import bentoml
    import mlflow
    from bentoml.exceptions import BentoMLException, NotFound

    use_store(settings)
    tag = bento_tag(settings, info.version)
    try:
        existing = bentoml.models.get(tag)
        if existing.info.labels.get("mlflow_run_id") == info.run_id:
            return existing
        bentoml.models.delete(tag)
    except NotFound:
        pass
    labels = {
        "mlflow_model": info.name,
        "mlflow_version": info.version,
        "mlflow_run_id": info.run_id,
    }
    meta = {
        "decision_threshold": info.decision_threshold,
        "image_size": info.image_size,
        "tracking_uri": settings.mlflow_tracking_uri,
    }
    try:
        with bentoml.models.create(tag, labels=labels, metadata=meta) as bm:
            dst = Path(bm.path) / MLFLOW_SUBDIR
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{info.name}/{info.version}",
                tracking_uri=settings.mlflow_tracking_uri,
            )
            shutil.copytree(local, dst)
    except BentoMLException:
        # another process imported the same tag meanwhile
        return bentoml.models.get(tag)
    return bentoml.models.get(tag)


def require_signed_files(bento_model: BentoModel, info: ModelInfo) -> None:
    """The files about to be loaded must have the digest the signed decision vouches for; a
    store entry that does not is removed (the next start imports it afresh) and refused."""
    import bentoml

    from mammo_pipeline.common.signing import directory_sha256

    digest = directory_sha256(Path(bento_model.path) / MLFLOW_SUBDIR)
    if info.model_sha256 is None or digest == info.model_sha256:
        return
    with contextlib.suppress(Exception):
        bentoml.models.delete(bento_model.tag)
    raise ConfigError(
        f"refusing to serve {info.name} v{info.version}: the model files (sha256 "
        f"{digest[:12]}) are not the signed ones ({info.model_sha256[:12]}): the artifact was "
        "swapped after it was gated"
    )


def load_keras(bento_model: BentoModel):
    """The Keras model stored in a BentoML model entry."""
    import mlflow

    return mlflow.keras.load_model(str(Path(bento_model.path) / MLFLOW_SUBDIR))


def load_from_registry(settings: Settings, version: str):
    """The Keras model of a registry version loaded straight from MLflow (in-process check)."""
    import mlflow

    use_store(settings)
    return mlflow.keras.load_model(f"models:/{settings.registered_model_name}/{version}")


def load_served_model(settings: Settings, version: str | None = None) -> tuple[Any, ModelInfo]:
    """Resolve, import into BentoML and load: returns ``(keras_model, info)``."""
    resolved = resolve_version(settings, version)
    info = describe_version(settings, resolved)
    bm = import_version(settings, info)
    require_signed_files(bm, info)
    model = load_keras(bm)
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 1:
        raise MammoError(f"model input shape {shape} is not (None, S, S, 1)")
    info = ModelInfo(**{**info.to_dict(), "image_size": int(shape[1]), "bento_tag": str(bm.tag)})
    return model, info
