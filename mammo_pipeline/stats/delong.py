"""DeLong's test for the difference of two correlated ROC AUCs (same tiles, two scorers).

Owns :func:`delong_paired` and its result :class:`DeLongTest`. Method: DeLong, DeLong &
Clarke-Pearson (1988), computed with placement values from sorted scores (Sun & Xu 2014):
for each model the placement of a positive is the share of negatives it outscores (ties
count one half), that of a negative the share of positives outscoring it; the AUC is the
mean placement, and the covariance of the two AUCs is ``S10 / m + S01 / n`` with ``S10``,
``S01`` the sample covariances (denominator ``m - 1``, ``n - 1``) of the placements of the
``m`` positives and ``n`` negatives. The difference is tested with
``z = delta / sqrt(var)`` (two-sided normal p-value) and gets a Wald interval.

It is a cross-check of the bootstrap interval of the AUC difference, not the gate's rule.
With fewer than two positives or negatives the variance is undefined (NaN, ``None`` in
JSON). With a zero variance (e.g. two identically ranking models), ``z`` and ``p`` are 0
and 1 when the difference is 0, undefined otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from mammo_pipeline.stats.intervals import from_json_number, json_number, two_sided_z


@dataclass(frozen=True)
class DeLongTest:
    """DeLong's paired test of ``candidate_auc - reference_auc``."""

    candidate_auc: float
    reference_auc: float
    delta: float
    variance: float
    z: float
    p_value: float
    low: float
    high: float
    confidence: float

    @property
    def std_error(self) -> float:
        return math.sqrt(self.variance) if self.variance >= 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (undefined numbers become ``None``)."""
        return {
            "candidate_auc": json_number(self.candidate_auc),
            "reference_auc": json_number(self.reference_auc),
            "delta": json_number(self.delta),
            "variance": json_number(self.variance),
            "std_error": json_number(self.std_error),
            "z": json_number(self.z),
            "p_value": json_number(self.p_value),
            "low": json_number(self.low),
            "high": json_number(self.high),
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeLongTest:
        """Inverse of :meth:`to_dict`."""
        fields = ("candidate_auc", "reference_auc", "delta", "variance", "z", "p_value")
        values = {k: from_json_number(data[k]) for k in fields}
        return cls(
            **values,
            low=from_json_number(data["low"]),
            high=from_json_number(data["high"]),
            confidence=float(data["confidence"]),
        )


def placement_values(
    positive_scores: np.ndarray, negative_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placements ``(V10, V01)`` of one model, ties counted one half.

    ``V10[i]``: share of negatives scoring below positive ``i`` (+ half the ties);
    ``V01[j]``: share of positives scoring above negative ``j`` (+ half the ties).
    """
    neg_sorted = np.sort(negative_scores)
    pos_sorted = np.sort(positive_scores)
    below = np.searchsorted(neg_sorted, positive_scores, side="left")
    tied = np.searchsorted(neg_sorted, positive_scores, side="right") - below
    v10 = (below + 0.5 * tied) / neg_sorted.shape[0]
    at_or_below = np.searchsorted(pos_sorted, negative_scores, side="right")
    tied = at_or_below - np.searchsorted(pos_sorted, negative_scores, side="left")
    v01 = (pos_sorted.shape[0] - at_or_below + 0.5 * tied) / pos_sorted.shape[0]
    return v10, v01


def delong_paired(
    positive: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    confidence: float = 0.95,
) -> DeLongTest:
    """DeLong's test on validated inputs (bool labels, finite scores of equal length)."""
    z_crit = two_sided_z(confidence)
    v10 = []
    v01 = []
    for scores in (candidate, reference):
        a, b = placement_values(scores[positive], scores[~positive])
        v10.append(a)
        v01.append(b)
    aucs = [float(np.mean(v)) for v in v10]
    delta = aucs[0] - aucs[1]
    m, n = v10[0].shape[0], v01[0].shape[0]
    if m < 2 or n < 2:
        nan = math.nan
        return DeLongTest(aucs[0], aucs[1], delta, nan, nan, nan, nan, nan, confidence)
    s10 = np.cov(np.vstack(v10), ddof=1)
    s01 = np.cov(np.vstack(v01), ddof=1)
    s = s10 / m + s01 / n
    variance = max(float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1]), 0.0)
    if variance > 0:
        se = math.sqrt(variance)
        z = delta / se
        p = 2.0 * NormalDist().cdf(-abs(z))
        low, high = delta - z_crit * se, delta + z_crit * se
    elif delta == 0:
        z, p, low, high = 0.0, 1.0, 0.0, 0.0
    else:
        z = p = math.nan
        low = high = delta
    return DeLongTest(aucs[0], aucs[1], delta, variance, z, p, low, high, confidence)
