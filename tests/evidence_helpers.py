"""Per-tile test predictions made to order, and MLflow runs that carry them the way the train
and evaluate stages log them (metrics recomputed from the same predictions, the CSV artifact
and its digest tag). Shared by the gate and registry tests."""

from __future__ import annotations

import math
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


def sensitivity_walk(steps: int, threshold: float = 0.5, seed: int = 7):
    """(labels, [scores of v1, v2, ...]) of the walk-down that got through the gate: each step
    ranks 8 low-scored positives higher (ROC AUC up by about 0.005) and pushes the 10 positives
    just above the operating point below it (sensitivity at the same specificity down by
    0.010), on 7,000 tiles (1,000 positive) whose negatives never change, so ``threshold``
    keeps a specificity of 0.90 in every version."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(7000, dtype=np.int64)
    labels[:1000] = np.arange(1000) % 4 + 1
    rng.shuffle(labels)
    positive = labels > 0
    z = rng.normal(0.0, 1.0, labels.size) + 2.5 * positive
    cut = float(np.quantile(z[~positive], 0.90))
    shift = math.log(threshold / (1.0 - threshold)) - cut  # z == cut <-> p == threshold
    versions = [z.copy()]
    for _ in range(steps):
        z = z.copy()
        above = np.flatnonzero(positive & (z >= cut))
        above = above[np.argsort(z[above])][:10]
        z[above] = cut - 1e-3 - rng.uniform(0.0, 0.05, above.size)
        low = np.flatnonzero(positive & (z < cut - 1.0))
        low = low[np.argsort(z[low])][:8]
        z[low] = cut - 0.2
        versions.append(z)
    return labels, [1.0 / (1.0 + np.exp(-(v + shift))) for v in versions]
