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
