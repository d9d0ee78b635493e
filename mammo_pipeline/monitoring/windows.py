"""One window of the prediction log against the version's reference: its figures.

Windows are consecutive, of ``monitor_window_hours``, ending at the report's end time (the
last window is the most recent). Tile traffic (``/predict``, ``/predict_batch``) is compared
with the held-out tile predictions and input statistics; film traffic (``/analyze``) with
the held-out films' scores when the version was evaluated on films. A window with fewer
than ``monitor_min_window_size`` scored tiles is *insufficient*: reported, never judged.

A window *drifts* when any of: the tile score distribution, the input mean or input std
drifts (:class:`~.stats.DriftTest`: PSI above the threshold and KS p below the
significance), or the expected positive rate lies outside the window's Wilson interval at
``1 - p_value``. Realised sensitivity, specificity and PPV come from the window's records
that have feedback (:mod:`.feedback`: benign and malignant are positives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.monitoring.feedback import Feedback, is_positive
from mammo_pipeline.monitoring.records import PredictionRecord
from mammo_pipeline.monitoring.reference import VersionReference
from mammo_pipeline.monitoring.stats import (
    DriftTest,
    RateCheck,
    drift_test,
    rate_check,
    realised_performance,
)
from mammo_pipeline.stats.intervals import Interval

TILE_ENDPOINTS = frozenset({"predict", "predict_batch"})
DRIFT_INPUTS = ("input_mean", "input_std")


@dataclass
class WindowFigures:
    start: float
    end: float
    n_records: int
    n_tiles: int
    n_films: int
    n_failed: int
    sufficient: bool
    score_drift: DriftTest | None = None
    input_drift: list[DriftTest] = field(default_factory=list)
    positive_rate: RateCheck | None = None
    film_score_drift: DriftTest | None = None
    film_positive_rate: RateCheck | None = None
    performance: dict[str, Interval] = field(default_factory=dict)
    n_feedback: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    saturated_fraction_mean: float | None = None

    @property
    def drift_reasons(self) -> list[str]:
        """Why this window drifts ([] when it does not or is insufficient)."""
        if not self.sufficient:
            return []
        reasons = [t.describe() for t in [self.score_drift, *self.input_drift] if t and t.drift]
        if self.positive_rate is not None and self.positive_rate.outside:
            reasons.append(self.positive_rate.describe())
        return reasons

    @property
    def drifts(self) -> bool:
        return bool(self.drift_reasons)

    def to_dict(self) -> dict[str, Any]:
        def opt(x: Any) -> Any:
            return None if x is None else x.to_dict()

        return {
            "start": self.start,
            "end": self.end,
            "n_records": self.n_records,
            "n_tiles": self.n_tiles,
            "n_films": self.n_films,
            "n_failed": self.n_failed,
            "sufficient": self.sufficient,
            "drifts": self.drifts,
            "drift_reasons": self.drift_reasons,
            "score_drift": opt(self.score_drift),
            "input_drift": [t.to_dict() for t in self.input_drift],
            "positive_rate": opt(self.positive_rate),
            "film_score_drift": opt(self.film_score_drift),
            "film_positive_rate": opt(self.film_positive_rate),
            "performance": {k: v.to_dict() for k, v in self.performance.items()},
            "n_feedback": self.n_feedback,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p95": self.latency_ms_p95,
            "saturated_fraction_mean": self.saturated_fraction_mean,
        }


def window_bounds(since: float, until: float, hours: float) -> list[tuple[float, float]]:
    """Consecutive windows of ``hours`` ending at ``until``; the first may start before
    ``since`` is reached exactly (it is cut at ``since``)."""
    length = hours * 3600.0
    n = max(1, math.ceil((until - since) / length - 1e-9))
    return [(max(since, until - (n - i) * length), until - (n - i - 1) * length) for i in range(n)]


def _values(records: list[PredictionRecord], name: str) -> np.ndarray:
    vals = [getattr(r.inputs, name) for r in records]
    return np.asarray([v for v in vals if v is not None and math.isfinite(v)], dtype=np.float64)


def evaluate_window(
    start: float,
    end: float,
    records: list[PredictionRecord],
    labelled: list[tuple[PredictionRecord, Feedback]],
    ref: VersionReference,
    settings: Settings,
) -> WindowFigures:
    """The figures of the records with ``start <= time < end``."""
    alpha = settings.monitor_p_value
    thr = settings.monitor_psi_threshold
    ok = [r for r in records if r.status == "ok"]
    tiles = [r for r in ok if r.endpoint in TILE_ENDPOINTS]
    films = [r for r in ok if r.endpoint == "analyze"]
    w = WindowFigures(
        start=start,
        end=end,
        n_records=len(records),
        n_tiles=len(tiles),
        n_films=len(films),
        n_failed=len(records) - len(ok),
        sufficient=len(tiles) >= settings.monitor_min_window_size,
    )
    latencies = np.asarray([r.latency_ms for r in records if r.latency_ms is not None])
    if latencies.size:
        w.latency_ms_p50 = float(np.percentile(latencies, 50))
        w.latency_ms_p95 = float(np.percentile(latencies, 95))
    sat = _values(tiles, "saturated_fraction")
    w.saturated_fraction_mean = float(sat.mean()) if sat.size else None
    if tiles:
        scores = np.asarray([r.score for r in tiles], dtype=np.float64)
        w.score_drift = drift_test("tile score", ref.tile_scores, scores, thr, alpha)
        positives = int(np.count_nonzero(scores >= ref.threshold))
        w.positive_rate = rate_check(positives, scores.size, ref.expected_positive_rate, alpha)
        if ref.inputs is not None:
            for name in DRIFT_INPUTS:
                vals = _values(tiles, name)
                if vals.size:
                    w.input_drift.append(drift_test(name, ref.inputs[name], vals, thr, alpha))
    film_rate = ref.expected_film_positive_rate
    if films and ref.film_scores is not None and film_rate is not None:
        fs = np.asarray([r.score for r in films], dtype=np.float64)
        w.film_score_drift = drift_test("film score", ref.film_scores, fs, thr, alpha)
        assert ref.film_threshold is not None
        w.film_positive_rate = rate_check(
            int(np.count_nonzero(fs >= ref.film_threshold)), fs.size, film_rate, alpha
        )
    w.performance, w.n_feedback = performance_of(labelled)
    return w


def performance_of(
    labelled: list[tuple[PredictionRecord, Feedback]], confidence: float = 0.95
) -> tuple[dict[str, Interval], int]:
    """Realised sensitivity, specificity and PPV of answered images with feedback (the
    answer's own label against the outcome), and how many there were."""
    scored = [(r, f) for r, f in labelled if r.status == "ok"]
    truth = np.asarray([is_positive(f.outcome) for _, f in scored], dtype=bool)
    predicted = np.asarray([r.label == "positive" for r, _ in scored], dtype=bool)
    return realised_performance(truth, predicted, confidence), len(scored)
