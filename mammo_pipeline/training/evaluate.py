"""Evaluation on the fixed held-out test split, and the choice of the decision threshold.

Threshold: chosen on the *validation* split as the highest-precision threshold whose recall
reaches ``target_recall`` (ties: the higher threshold); a tile is positive when
``probability >= threshold``. Metrics (scikit-learn) logged on the training run:

- ``test_precision``, ``test_recall``, ``test_f1``, ``test_accuracy``, ``test_specificity``
  at the decision threshold; ``test_roc_auc``, ``test_pr_auc`` (average precision);
- ``test_recall_label_1`` .. ``test_recall_label_4``: the fraction of test tiles of each
  lesion type called positive (1 benign calcification, 2 benign mass, 3 malignant
  calcification, 4 malignant mass); ``test_n``, ``test_positives``;
- ``test_recall_calcification`` / ``test_recall_mass`` and ``test_roc_auc_calcification`` /
  ``test_roc_auc_mass``: the same per lesion type (labels 1+3 / 2+4), each type's positives
  against all negatives, with ``test_positives_calcification`` / ``test_positives_mass``
  (the public held-out set is half calcification, half mass cases);
- tag ``test_manifest_sha256``: the digest of the test split files; tag
  ``test_predictions_sha256``: the digest of the per-tile predictions; tag
  ``signed_evaluation``: those digests, the metrics and the model files' digest, signed
  (:mod:`.signed_evaluation`).

Artifacts under ``evaluation/``: ``confusion_matrix.png``, ``roc_pr_curves.png``,
``metrics.json`` and ``test_predictions.csv`` (:mod:`.predictions`, what the gate reads).

When the film set (``settings.film_test_split``) exists, the same evaluation runs the model
over whole films as ``/analyze`` does and adds the film metrics, the film threshold and their
artifacts (:mod:`.film_eval`).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammo_pipeline.common.jsonsafe import clean
from mammo_pipeline.config import Settings, get_settings
from mammo_pipeline.data.schema import LABEL_NAMES
from mammo_pipeline.errors import ConfigError, MammoError
from mammo_pipeline.training.predictions import (
    PREDICTIONS_DIGEST_TAG,
    PREDICTIONS_FILE,
    TilePredictions,
    tile_ids_for,
)

LABEL_RECALL_METRICS = {k: f"test_recall_label_{k}" for k in LABEL_NAMES if k > 0}
ARTIFACT_DIR = "evaluation"
MODEL_URI_TAG = "model_uri"


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, target_recall: float) -> float:
    """Highest-precision threshold with recall >= ``target_recall`` on (validation) data.

    With no positive example the recall is undefined and 0.5 is returned.
    """
    from sklearn.metrics import precision_recall_curve

    y_true = np.asarray(y_true).astype(int).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y_true.sum() == 0 or y_true.size == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    ok = recall >= target_recall - 1e-12
    if not ok.any():  # cannot happen: the lowest threshold has recall 1
        return float(thresholds.min())
    best = precision[ok].max()
    return float(thresholds[ok][precision[ok] >= best - 1e-12].max())


def _safe(fn, *args) -> float:
    try:
        return float(fn(*args))
    except ValueError:  # one class only
        return float("nan")


def binary_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, prefix: str = "test_"
) -> dict[str, float]:
    """Threshold metrics, ROC AUC and PR AUC with scikit-learn."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true).astype(int).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    pred = (scores >= threshold).astype(int)
    tn, fp, _, _ = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    return {
        f"{prefix}precision": float(precision_score(y_true, pred, zero_division=0)),
        f"{prefix}recall": float(recall_score(y_true, pred, zero_division=0)),
        f"{prefix}f1": float(f1_score(y_true, pred, zero_division=0)),
        f"{prefix}accuracy": float(accuracy_score(y_true, pred)),
        f"{prefix}specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        f"{prefix}roc_auc": _safe(roc_auc_score, y_true, scores),
        f"{prefix}pr_auc": _safe(average_precision_score, y_true, scores),
    }


def per_label_recall(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """``test_recall_label_k``: share of tiles with lesion type k called positive."""
    labels = np.asarray(labels).reshape(-1)
    pred = np.asarray(scores).reshape(-1) >= threshold
    out = {}
    for k, name in LABEL_RECALL_METRICS.items():
        mask = labels == k
        out[name] = float(pred[mask].mean()) if mask.any() else float("nan")
    return out


def predict_scores(model, dataset) -> np.ndarray:
    """Sigmoid probabilities of ``model`` over a ``tf.data`` dataset, as float64 (N,)."""
    scores = model.predict(dataset, verbose=0)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


#: Lesion types of the 5-class label: calcification (benign 1, malignant 3), mass (2, 4).
LESION_TYPES: dict[str, tuple[int, ...]] = {"calcification": (1, 3), "mass": (2, 4)}


def per_type_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Recall and ROC AUC of each lesion type's positives against all negatives."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    negatives = labels == 0
    out: dict[str, float] = {}
    for name, values in LESION_TYPES.items():
        mask = np.isin(labels, values)
        out[f"test_positives_{name}"] = float(mask.sum())
        out[f"test_recall_{name}"] = (
            float((scores[mask] >= threshold).mean()) if mask.any() else float("nan")
        )
        keep = mask | negatives
        out[f"test_roc_auc_{name}"] = _safe(roc_auc_score, mask[keep].astype(int), scores[keep])
    return out


def held_out_predictions(model, settings: Settings):
    """:class:`~mammo_pipeline.training.predictions.TilePredictions` of ``model`` on every
    numpy split in ``settings.test_split`` (files sorted by name, tiles in file order)."""
    from mammo_pipeline.data.numpy_split import find_splits, load_split
    from mammo_pipeline.data.pipeline import PipelineOptions, numpy_dataset

    image_size = int(model.input_shape[1])
    data_files = find_splits(settings.test_split)
    if not data_files:
        raise MammoError(f"{settings.test_split}: no *_data.npy held-out test split found")
    scores, labels, ids = [], [], []
    for path in data_files:
        split = load_split(path)
        opts = PipelineOptions(image_size=image_size, batch_size=settings.batch_size)
        scores.append(predict_scores(model, numpy_dataset(split, opts)))
        labels.append(np.asarray(split.labels, dtype=np.int64))
        ids += tile_ids_for(path.name, len(split))
    all_scores = np.concatenate(scores)
    bad = np.flatnonzero(~np.isfinite(all_scores))
    if bad.size:
        raise MammoError(
            f"the model outputs a non-finite score (e.g. {all_scores[bad[0]]}) on test tile "
            f"{ids[bad[0]]}: a missing score is an error, never a negative"
        )
    return TilePredictions(tuple(ids), np.concatenate(labels), all_scores)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    threshold: float
    test_manifest_sha256: str
    artifacts: list[Path] = field(default_factory=list)
    predictions_sha256: str = ""
    #: tags to set on the run besides the digests above (film-level evaluation)
    tags: dict[str, str] = field(default_factory=dict)
    film_summary: dict | None = None


def evaluate_model(
    model,
    settings: Settings,
    threshold: float,
    out_dir: Path,
    *,
    synthetic: bool = False,
    weights: str = "",
) -> Evaluation:
    """Test metrics and figures for ``model`` at ``threshold`` (nothing logged here), plus
    the film-level evaluation when the film set exists."""
    from mammo_pipeline.data.manifest import build_manifest, held_out_files
    from mammo_pipeline.training import plots
    from mammo_pipeline.training.film_eval import film_evaluation
    from mammo_pipeline.training.model import weights_source

    test_manifest = build_manifest(held_out_files(settings.test_split))
    synthetic = synthetic or test_manifest.synthetic
    predictions = held_out_predictions(model, settings)
    scores, labels = predictions.scores, predictions.labels
    y = (labels > 0).astype(int)
    metrics = binary_metrics(y, scores, threshold)
    metrics.update(per_label_recall(labels, scores, threshold))
    metrics.update(per_type_metrics(labels, scores, threshold))
    metrics.update(test_n=float(y.size), test_positives=float(y.sum()))
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y, (scores >= threshold).astype(int), labels=[0, 1])
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "decision_threshold": threshold,
        "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
        "confusion_matrix": {
            "tn": int(matrix[0, 0]),
            "fp": int(matrix[0, 1]),
            "fn": int(matrix[1, 0]),
            "tp": int(matrix[1, 1]),
        },
        "label_names": {f"test_recall_label_{k}": LABEL_NAMES[k] for k in LABEL_RECALL_METRICS},
        "test_manifest_sha256": test_manifest.sha256,
        "synthetic": synthetic,
    }
    artifacts = [
        plots.confusion_matrix_plot(
            matrix, out_dir / "confusion_matrix.png", threshold=threshold, synthetic=synthetic
        ),
        plots.roc_pr_plot(
            y, scores, out_dir / "roc_pr_curves.png", threshold=threshold, synthetic=synthetic
        ),
    ]
    predictions_path = out_dir / PREDICTIONS_FILE
    digest = predictions.write(predictions_path)
    report["test_predictions_sha256"] = digest
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(report, indent=2))
    artifacts += [metrics_path, predictions_path]
    film = film_evaluation(
        model,
        settings,
        threshold,
        out_dir,
        synthetic=synthetic,
        weights=weights or weights_source(settings.weights),
    )
    if film is None:
        return Evaluation(metrics, threshold, test_manifest.sha256, artifacts, digest)
    metrics.update(film.metrics)
    report["metrics"] = {k: (None if math.isnan(v) else v) for k, v in metrics.items()}
    report.update(film=film.summary, **film.tags)  # the method is one of the tags
    metrics_path.write_text(json.dumps(report, indent=2))
    return Evaluation(metrics, threshold, test_manifest.sha256, artifacts + film.artifacts,
                      digest, film.tags, film.summary)  # fmt: skip


def log_evaluation(
    settings: Settings,
    run_id: str,
    evaluation: Evaluation,
    model_id: str | None = None,
    *,
    model_uri: str | None = None,
    model_sha256: str | None = None,
) -> None:
    """Log metrics, the test manifest tag and the artifacts on an existing run, then sign
    the evaluation (:mod:`.signed_evaluation`) over the evaluated model's files (``model_uri``,
    default ``models:/<model_id>`` or the run's ``model_uri`` tag; ``model_sha256`` when the
    caller already has their digest)."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import mlflow_client, use_store
    from mammo_pipeline.training.signed_evaluation import sign_evaluation

    client = mlflow_client(settings)
    use_store(settings)  # mlflow.log_metrics links the metrics to the LoggedModel too
    mlflow.log_metrics(evaluation.metrics, run_id=run_id, model_id=model_id)
    client.set_tag(run_id, "test_manifest_sha256", evaluation.test_manifest_sha256)
    if evaluation.predictions_sha256:
        client.set_tag(run_id, PREDICTIONS_DIGEST_TAG, evaluation.predictions_sha256)
    for key, value in evaluation.tags.items():
        client.set_tag(run_id, key, value)
    for path in evaluation.artifacts:
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    if model_uri is None:
        model_uri = f"models:/{model_id}" if model_id else None
    if model_uri is None:
        model_uri = client.get_run(run_id).data.tags.get(MODEL_URI_TAG, f"runs:/{run_id}/model")
    sign_evaluation(settings, run_id, evaluation, model_uri, model_sha256)


def _run_threshold(run) -> float:
    value = run.data.metrics.get("decision_threshold")
    if value is None:
        raise ConfigError(f"run {run.info.run_id} has no decision_threshold metric")
    return float(value)


def evaluate_run(settings: Settings | None = None, run_id: str = "") -> dict[str, float]:
    """Load a training run's model, evaluate it on the test split, log the results on it.

    The threshold is the run's ``decision_threshold`` (chosen on validation data at
    training time). Returns the logged metrics plus ``decision_threshold``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from mammo_pipeline.common.mlflow_access import mlflow_client, use_store

    s = settings or get_settings()
    use_store(s)  # mlflow.keras.load_model resolves runs:/ and models:/ URIs globally
    try:
        run = mlflow_client(s).get_run(run_id)
    except MlflowException as exc:
        raise MammoError(f"no MLflow run {run_id!r} at {s.mlflow_tracking_uri}") from exc
    from mammo_pipeline.common.mlflow_access import quiet_artifact_downloads
    from mammo_pipeline.common.signing import directory_sha256

    model_uri = run.data.tags.get(MODEL_URI_TAG, f"runs:/{run_id}/model")
    synthetic = run.data.tags.get("synthetic") == "true"
    weights = run.data.tags.get("weights_source", "")
    with tempfile.TemporaryDirectory(prefix="mammo-eval-") as tmp:
        with quiet_artifact_downloads():  # the files evaluated are the files digested
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=str(Path(tmp) / "model")
            )
        model = mlflow.keras.load_model(local)
        evaluation = evaluate_model(
            model, s, _run_threshold(run), Path(tmp) / "out", synthetic=synthetic,
            weights=weights,
        )  # fmt: skip
        log_evaluation(s, run_id, evaluation, run.data.tags.get("model_id"),
                       model_uri=model_uri, model_sha256=directory_sha256(local))  # fmt: skip
    # NaN (e.g. the recall of a lesion type absent from the test set) is not JSON: None
    return clean(
        {**evaluation.metrics, "decision_threshold": evaluation.threshold}, non_finite="none"
    )
