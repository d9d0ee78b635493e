"""Per-tile test predictions made to order, and MLflow runs that carry them the way the train
and evaluate stages log them (metrics recomputed from the same predictions, the CSV artifact
and its digest tag). Shared by the gate and registry tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_pipeline.registry.evidence import Evidence
from mammo_pipeline.training.evaluate import binary_metrics
from mammo_pipeline.training.predictions import TilePredictions, sha256_of, tile_ids_for

N_TILES = 600
N_POSITIVE = 90
TEST_DIGEST = "t" * 64


def fixed_labels(n: int = N_TILES, positives: int = N_POSITIVE) -> np.ndarray:
    """5-class labels of a fixed test set: ``positives`` lesions (types 1..4), the rest 0."""
    labels = np.zeros(n, dtype=np.int64)
    labels[:positives] = np.arange(positives) % 4 + 1
    np.random.default_rng(1234).shuffle(labels)
    return labels


def scores_for(labels: np.ndarray, signal: float, seed: int = 0) -> np.ndarray:
    """Probabilities whose separation grows with ``signal``; the same ``seed`` gives the same
    noise, so two models differing only in ``signal`` are paired on every tile."""
    noise = np.random.default_rng(seed).normal(0.0, 1.0, labels.size)
    return 1.0 / (1.0 + np.exp(-(signal * (labels > 0) - signal / 2 + noise)))


def predictions(labels: np.ndarray, scores: np.ndarray) -> TilePredictions:
    return TilePredictions(tuple(tile_ids_for("synthetic_test_data.npy", labels.size)), labels,
                           np.asarray(scores, dtype=np.float64))  # fmt: skip


def logged_metrics(preds: TilePredictions, threshold: float) -> dict[str, float]:
    return {
        **binary_metrics(preds.positive, preds.scores, threshold),
        "decision_threshold": threshold,
    }


def evidence(
    version: str,
    signal: float = 3.0,
    *,
    seed: int = 0,
    threshold: float = 0.5,
    labels: np.ndarray | None = None,
    digest: str | None = TEST_DIGEST,
    metrics: dict | None = None,
) -> Evidence:
    """In-memory :class:`Evidence` as :func:`load_evidence` would read it."""
    labels = fixed_labels() if labels is None else labels
    preds = predictions(labels, scores_for(labels, signal, seed))
    return Evidence(
        version=version,
        run_id=f"run-{version}",
        run_status="FINISHED",
        metrics={**logged_metrics(preds, threshold), **(metrics or {})},
        threshold=threshold,
        test_manifest_sha256=digest,
        predictions=preds,
        predictions_sha256=sha256_of(preds.to_csv()),
        synthetic=True,
    )


def log_evidence(preds: TilePredictions, threshold: float, out_dir: Path) -> tuple[dict, str, Path]:
    """Write the CSV like evaluation does; returns (metrics, digest, path)."""
    path = out_dir / "test_predictions.csv"
    digest = preds.write(path)
    return logged_metrics(preds, threshold), digest, path
