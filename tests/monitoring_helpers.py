"""A served version for the monitoring tests, made the way evaluation logs one (a finished
run with the per-tile test predictions CSV, its digest, the threshold and the test manifest
digest; a registered version with the ``champion`` alias; real MLflow, no model needed: the
monitor reads evidence, never the model), and prediction records of synthetic traffic drawn
from that reference, shifted or not."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.monitoring.records import InputStats, PredictionRecord

THRESHOLD = 0.5
SPLIT = "synthetic_test"


def reference_scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(5-class labels, scores) of a held-out set: 30% lesions, separable scores."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.3, rng.integers(1, 5, n), 0)
    z = rng.normal(0.0, 1.0, n) + 2.5 * (labels > 0) - 1.5
    return labels.astype(np.int64), 1.0 / (1.0 + np.exp(-z))


def write_test_split(directory: Path, labels: np.ndarray, seed: int = 0) -> None:
    """SYNTHETIC held-out tiles of one random grey level each (mean 60..160, std 0)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    n = labels.size
    tiles = np.broadcast_to(
        rng.uniform(60, 160, (n, 1, 1, 1)).astype(np.uint8), (n, 299, 299, 1)
    ).copy()
    np.save(directory / f"{SPLIT}_data.npy", tiles)
    np.save(directory / f"{SPLIT}_labels.npy", labels)


def make_served_version(settings: Settings, *, with_split: bool = True, seed: int = 0) -> str:
    """Register an evaluated version and make it the champion; returns its number."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow, mlflow_client
    from mammo_pipeline.data.manifest import build_manifest, held_out_files
    from mammo_pipeline.training.predictions import (
        PREDICTIONS_DIGEST_TAG,
        TilePredictions,
        tile_ids_for,
    )

    labels, scores = reference_scores(seed=seed)
    tags = {"synthetic": "true", "weights_source": "none"}
    if with_split:
        write_test_split(settings.test_split, labels, seed)
        tags["test_manifest_sha256"] = build_manifest(held_out_files(settings.test_split)).sha256
    configure_mlflow(settings)
    preds = TilePredictions(tuple(tile_ids_for(f"{SPLIT}_data.npy", labels.size)), labels, scores)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_predictions.csv"
        tags[PREDICTIONS_DIGEST_TAG] = preds.write(path)
        mlflow.set_tags(tags)
        mlflow.log_params({"image_size": 64})
        mlflow.log_metrics({"decision_threshold": THRESHOLD})
        mlflow.log_artifact(str(path), "evaluation")
    client = mlflow_client(settings)
    name = settings.registered_model_name
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


def traffic(
    n: int,
    version: str,
    *,
    start: float,
    span_s: float,
    seed: int = 1,
    score_shift: float = 0.0,
    brightness: float = 0.0,
    name: str = "mammo-vgg16",
) -> list[PredictionRecord]:
    """``n`` /predict records spread over ``[start, start + span_s)``: scores drawn like the
    reference's (logit shifted by ``score_shift``), input means like the SYNTHETIC test
    tiles' (plus ``brightness``), all declared SYNTHETIC."""
    rng = np.random.default_rng(seed)
    labels, _ = reference_scores(n, seed=seed + 100)
    z = rng.normal(0.0, 1.0, n) + 2.5 * (labels > 0) - 1.5 + score_shift
    scores = 1.0 / (1.0 + np.exp(-z))
    means = rng.uniform(60, 160, n) + brightness
    times = start + np.sort(rng.uniform(0, span_s, n))
    return [
        PredictionRecord(
            request_id=uuid.uuid4().hex,
            model_name=name,
            model_version=version,
            endpoint="predict",
            status="ok",
            score=float(s),
            label="positive" if s >= THRESHOLD else "negative",
            threshold=THRESHOLD,
            latency_ms=12.0,
            time=float(t),
            inputs=InputStats(
                width=299,
                height=299,
                bit_depth=8,
                input_mean=float(m),
                input_std=0.0,
                saturated_fraction=0.0,
                synthetic=True,
            ),
        )
        for s, m, t in zip(scores, means, times, strict=True)
    ]


def truth_of(records: list[PredictionRecord], seed: int = 1) -> list[bool]:
    """The lesions behind :func:`traffic` (same seed): positives of its labels."""
    labels, _ = reference_scores(len(records), seed=seed + 100)
    return list(labels > 0)


def now() -> float:
    return time.time()


# --- a served model with a reference, for a real `bentoml serve` (test_monitoring_e2e) -------
def scanner_tiles(n: int, seed: int, gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` SYNTHETIC 299x299 uint8 tiles of one scanner: a grey level uniform in 60..160
    with noise (std 20), times ``gain`` (< 1: a darker scanner or window), and their
    5-class labels (30% lesions). The same ``seed`` gives the same tiles at any gain."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.3, rng.integers(1, 5, n), 0).astype(np.int64)
    base = rng.uniform(60, 160, (n, 1, 1))
    noise = rng.normal(0.0, 20.0, (n, 299, 299))
    tiles = np.clip((base + noise) * gain, 0, 255).round().astype(np.uint8)
    return tiles, labels


def register_monitored_model(settings: Settings, seed: int, n_test: int = 200) -> str:
    """A tiny served model (``tests.test_service.tiny_model``) with the evidence monitoring
    reads, made the way training and evaluation make it: a held-out test split of
    :func:`scanner_tiles` in ``settings.test_split``, the model's own per-tile predictions on
    it logged and signed by the evaluation's code (``log_evaluation``: CSV, digests, test
    manifest), the threshold at their median (expected positive rate 50%), registered with
    ``gate=passed`` signed as the gate signs (``sign_as_gate``) and the ``champion`` alias.
    Returns the version."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow, mlflow_client
    from mammo_pipeline.data.manifest import build_manifest, held_out_files
    from mammo_pipeline.training.evaluate import (
        Evaluation,
        binary_metrics,
        held_out_predictions,
        log_evaluation,
    )
    from tests.signed_versions import sign_as_gate
    from tests.test_service import model_requirements, tiny_model

    tiles, labels = scanner_tiles(n_test, seed=seed + 1000)
    settings.test_split.mkdir(parents=True, exist_ok=True)
    np.save(settings.test_split / f"{SPLIT}_data.npy", tiles[..., np.newaxis])
    np.save(settings.test_split / f"{SPLIT}_labels.npy", labels)
    configure_mlflow(settings)
    model = tiny_model(seed)
    preds = held_out_predictions(model, settings)
    threshold = float(np.median(preds.scores))
    with mlflow.start_run() as run:
        mlflow.set_tags({"synthetic": "true", "weights_source": "random init (test)"})
        mlflow.log_params({"image_size": 32})
        mlflow.log_metrics({"decision_threshold": threshold})
        info = mlflow.keras.log_model(
            model,
            name="model",
            pip_requirements=model_requirements(),
            metadata={"decision_threshold": threshold, "image_size": 32},
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_predictions.csv"
        evaluation = Evaluation(
            metrics=binary_metrics(preds.positive, preds.scores, threshold),
            threshold=threshold,
            test_manifest_sha256=build_manifest(held_out_files(settings.test_split)).sha256,
            artifacts=[path],
            predictions_sha256=preds.write(path),
        )
        log_evaluation(settings, run.info.run_id, evaluation, info.model_id)
    name = settings.registered_model_name
    mv = mlflow.register_model(info.model_uri, name)
    client = mlflow_client(settings)
    client.set_model_version_tag(name, mv.version, "decision_threshold", str(threshold))
    client.set_model_version_tag(name, mv.version, "gate", "passed")
    sign_as_gate(settings, str(mv.version))
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)
