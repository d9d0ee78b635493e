"""Training of the VGG16 classifier, tracked as one MLflow run, evaluated at the end.

Phase 1 trains the head with the VGG16 base frozen. When augmentation is off, the base runs
once over the training and validation records and the head is fitted on the pooled
features (seconds per epoch on a CPU); the full model shares the trained head, so the
logged model is the same either way. Phase 2 (``fine_tune_epochs > 0`` and
``trainable_blocks > 0``) unfreezes the top VGG16 blocks at ``fine_tune_learning_rate``.
Adam with cosine decay, class weights from the label counts, early stopping and the best
checkpoint on validation ROC AUC (``val_auc``), mixed precision only when a GPU is visible.

MLflow run contents: every setting as a parameter, per-epoch ``loss``, ``auc``,
``precision``, ``recall``, ``val_*`` and ``learning_rate``; ``val_roc_auc``,
``val_pr_auc``, ``val_recall_at_threshold``, ``val_precision_at_threshold`` and
``decision_threshold``; the test metrics of :mod:`mammo_pipeline.training.evaluate`; tags
``weights_source``, ``weights_random``, ``git_commit``, ``synthetic``,
``data_manifest_sha256``, ``test_manifest_sha256``,
the ``run_tags`` given (``airflow_run_id``, ``airflow_dag_id`` from the DAG),
``feature_cache``, ``model_uri``, ``model_id``; the data manifest as the dataset input
(context ``training``) and as ``data/manifest.json``; the
model as ``mlflow.keras`` flavour named ``model`` with metadata ``decision_threshold`` and
``image_size``; ``training_curves.png``; and, when the film set exists, the film-level
metrics, film threshold and artifacts of :mod:`mammo_pipeline.training.film_eval`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.common.jsonsafe import clean
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.data.grouped_split import SplitAssignment, assign_validation
from mammo_pipeline.data.manifest import DataManifest, build_manifest, held_out_files
from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset, read_labels
from mammo_pipeline.errors import DataError, TrainingDiverged
from mammo_pipeline.overrides import apply_overrides
from mammo_pipeline.training.model import ModelSpec, resolve_weights, weights_source


@dataclass
class TrainResult:
    """What a training produced; :meth:`to_dict` is JSON-safe (Airflow XCom)."""

    run_id: str
    experiment_id: str
    model_uri: str
    decision_threshold: float
    metrics: dict[str, float]
    data_manifest_sha256: str
    test_manifest_sha256: str
    weights_source: str
    synthetic: bool
    n_train: int
    n_val: int
    feature_cache: bool
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return clean(asdict(self), non_finite="none")


def class_weights(counts: dict[int, int]) -> dict[int, float]:
    """Balanced weights ``n / (2 n_c)`` of label_normal from 5-class label counts."""
    n_pos = sum(c for k, c in counts.items() if k > 0)
    n_neg = counts.get(0, 0)
    n = n_pos + n_neg
    if n_pos == 0 or n_neg == 0:
        raise DataError(None, f"training split needs both classes, label counts {counts}")
    return {0: n / (2.0 * n_neg), 1: n / (2.0 * n_pos)}


@dataclass
class TrainData:
    files: list[Path]
    settings: Settings
    n_train: int
    n_val: int
    label_counts: dict[int, int]
    val_labels: np.ndarray
    #: The train/validation split, made per group of near-duplicate views (no region on both
    #: sides); None only in callers that build TrainData by hand.
    split: SplitAssignment | None = None

    def opts(self, subset: str, training: bool, **kw: Any) -> PipelineOptions:
        s = self.settings
        return PipelineOptions(
            image_size=s.image_size,
            batch_size=s.batch_size,
            training=training,
            augment=s.augment,
            cache="memory" if s.cache != "none" else "none",
            shuffle_buffer=s.shuffle_buffer,
            seed=s.seed,
            max_records=s.max_records,
            subset=subset,
            val_fraction=s.val_fraction,
            split=self.split,
            records={"train": self.n_train, "validation": self.n_val}.get(subset) or None,
            **kw,  # type: ignore[arg-type]
        )

    def dataset(self, subset: str, training: bool, **kw: Any):
        return make_dataset(self.files, self.opts(subset, training, **kw))


def prepare_data(settings: Settings, files: Sequence[Path]) -> TrainData:
    """The group split, label counts of the train side and labels of the validation side.

    Near-duplicate views of one region (crops, flips, rotations: the public positives come
    that way) are grouped first and each group goes to one side (:mod:`.grouped_split`), so
    early stopping and the decision threshold are tuned on data the model has not seen."""
    split = assign_validation(list(files), settings.val_fraction, settings.seed)
    print(
        f"train/validation split by near-duplicate groups: {split.records} tiles in "
        f"{split.groups} groups, {split.validation_records} validation tiles "
        f"({split.validation_positives} positive); leakage (validation positives with a "
        f"near-copy in train): {split.leakage}"
    )
    base = TrainData(list(files), settings, 0, 0, {}, np.zeros(0), split)
    train_labels = read_labels(files, base.opts("train", False))
    val_labels = read_labels(files, base.opts("validation", False))
    if val_labels.size == 0 or (val_labels > 0).sum() == 0:
        raise DataError(
            None,
            f"validation split ({val_labels.size} records) has no positive "
            f"example: the {split.positive_groups} positive near-duplicate group(s) are too "
            "few (the stratified split puts one in validation from two); use more records",
        )
    values, counts = np.unique(train_labels, return_counts=True)
    label_counts = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    return TrainData(
        list(files),
        settings,
        int(train_labels.size),
        int(val_labels.size),
        label_counts,
        (val_labels > 0).astype(np.int32),
        split,
    )


def resolve_files(
    settings: Settings, files: Sequence[Path | str] | None, manifest: DataManifest | None
) -> list[Path]:
    from mammo_pipeline.data.tfrecord_io import list_tfrecords

    if files:
        return [Path(f) for f in files]
    if manifest is not None:
        return manifest.paths
    found = list_tfrecords(settings.validated)
    if not found:
        raise DataError(settings.validated, "no tfrecord files to train on")
    return found


def train_model(
    settings: Settings | None = None,
    files: list[Path] | None = None,
    manifest: DataManifest | None = None,
    overrides: dict[str, Any] | None = None,
    run_tags: Mapping[str, str] | None = None,
    evaluate: bool = True,
) -> TrainResult:
    """Train, log, evaluate: one MLflow run, tagged also with ``run_tags`` (what orchestrated
    it, e.g. ``{"airflow_run_id": ..., "airflow_dag_id": ...}``). With ``evaluate=False`` the
    test-split evaluation is left to :func:`mammo_pipeline.training.evaluate.evaluate_run`
    (the DAG runs it as its own task, off the GPU queue). ``files`` default to the manifest's
    or to the tfrecords in ``settings.validated``; the test split is ``settings.test_split``."""
    import keras
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow
    from mammo_pipeline.training import plots
    from mammo_pipeline.training.evaluate import (
        binary_metrics,
        choose_threshold,
        evaluate_model,
        log_evaluation,
    )
    from mammo_pipeline.training.fit import fit
    from mammo_pipeline.training.hardware import setup_precision
    from mammo_pipeline.training.model import build_model
    from mammo_pipeline.training.run_logging import (
        log_dataset,
        log_keras_model,
        run_params,
        split_metrics,
    )
    from mammo_pipeline.training.run_logging import (
        run_tags as base_run_tags,
    )

    s = apply_overrides(settings or get_settings(), overrides)
    paths = resolve_files(s, files, manifest)
    manifest = manifest or build_manifest(paths)
    held_out_files(s.test_split)  # fail before training when the test split is missing
    resolve_weights(s.weights)  # fail fast (e.g. offline without the ImageNet file)
    keras.utils.set_random_seed(s.seed)
    mixed = setup_precision()
    experiment_id = configure_mlflow(s)  # the run is logged with MLflow's fluent API
    data = prepare_data(s, paths)
    spec = ModelSpec(s.image_size, s.weights, tuple(s.head_units), s.dropout)  # type: ignore[arg-type]
    model = build_model(spec)
    tags = {**base_run_tags(s, manifest, None), **{k: v for k, v in (run_tags or {}).items() if v}}
    with (
        mlflow.start_run(experiment_id=experiment_id) as run,
        tempfile.TemporaryDirectory(prefix="mammo-train-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        run_id = run.info.run_id
        mlflow.set_tags(tags)
        log_dataset(manifest, tmp)
        try:
            history, val_scores, cached, phase1 = fit(model, data, tmp)
            if not np.all(np.isfinite(val_scores)):
                raise TrainingDiverged(len(history.get("loss", [])), float("nan"), s.learning_rate)
        except TrainingDiverged as exc:
            # the run ends FAILED (the context manager sees the exception) with the reason
            mlflow.set_tags({"failure_reason": str(exc), "mlflow.note.content": str(exc)})
            raise
        mlflow.log_params(run_params(s, data, mixed, cached))
        mlflow.log_metrics(split_metrics(data))
        if data.split is not None:
            mlflow.log_dict(data.split.summary(), "data/split.json")
        threshold = choose_threshold(data.val_labels, val_scores, s.target_recall)
        val = binary_metrics(data.val_labels, val_scores, threshold, prefix="val_")
        val_metrics = {
            "val_roc_auc": val["val_roc_auc"],
            "val_pr_auc": val["val_pr_auc"],
            "val_recall_at_threshold": val["val_recall"],
            "val_precision_at_threshold": val["val_precision"],
            "decision_threshold": threshold,
        }
        mlflow.log_metrics(val_metrics)
        curves = plots.training_curves(
            history,
            tmp / "training_curves.png",
            synthetic=manifest.synthetic,
            phase_boundary=phase1 if phase1 < len(history.get("loss", [])) else None,
        )
        mlflow.log_artifact(str(curves))
        info = log_keras_model(model, threshold, s.image_size, tags)
        mlflow.set_tags(
            {
                "model_uri": info.model_uri,
                "model_id": info.model_id or "",
                "feature_cache": str(cached).lower(),
            }
        )
        mlflow.log_metrics(val_metrics, model_id=info.model_id)
        evaluation = None
        if evaluate:
            evaluation = evaluate_model(
                model, s, threshold, tmp / "evaluation", synthetic=manifest.synthetic
            )
            log_evaluation(s, run_id, evaluation, info.model_id)
    return TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=info.model_uri,
        decision_threshold=threshold,
        metrics={**val_metrics, **(evaluation.metrics if evaluation else {})},
        data_manifest_sha256=manifest.sha256,
        test_manifest_sha256=evaluation.test_manifest_sha256 if evaluation else "",
        weights_source=weights_source(s.weights),
        synthetic=manifest.synthetic,
        n_train=data.n_train,
        n_val=data.n_val,
        feature_cache=cached,
        history=history,
    )
