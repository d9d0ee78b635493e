"""The statistics of monitoring: drift of a window against a reference, rates with intervals.

- **Drift** of a sample (scores, an input statistic) against the reference sample: the
  Population Stability Index over the reference's deciles (:func:`psi_quantile`, the PSI of
  :func:`mammo_pipeline.validation.drift.psi`) and the two-sample Kolmogorov-Smirnov test
  (``scipy.stats.ks_2samp``, exact or asymptotic as scipy chooses). A sample *drifts* when
  both say so: PSI above the threshold (a change large enough to matter) AND a p-value below
  the significance (not sampling noise). PSI alone cries wolf on small windows (its expected
  value under no change is about (bins - 1) x (1/n + 1/m)); a p-value alone flags
  negligible changes on large ones.
- **Rates**: the window's positive rate with its Wilson interval at ``1 - p_value``,
  flagged when the expected rate lies outside; realised sensitivity, specificity and PPV
  from feedback, each a Wilson interval with n (:func:`realised_performance`).

scipy rather than Evidently / NannyML / alibi-detect: docs/monitoring.md says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mammo_pipeline.stats.intervals import Interval, json_number, wilson_interval
from mammo_pipeline.validation.drift import psi

#: PSI bins: deciles of the reference.
PSI_BINS = 10


def _finite(values: np.ndarray | list[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: non-finite values")
    return x


def quantile_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates removed: tied references
    give fewer bins)."""
    qs = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(qs)


def psi_quantile(reference: np.ndarray, window: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of ``window`` against ``reference`` over the reference's quantile bins."""
    ref = _finite(reference, "reference")
    win = _finite(window, "window")
    if ref.size == 0 or win.size == 0:
        raise ValueError("PSI needs two non-empty samples")
    edges = quantile_edges(ref, bins)
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    win_counts = np.bincount(np.searchsorted(edges, win, side="right"), minlength=edges.size + 1)
    return psi(ref_counts, win_counts)


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the two-sided two-sample Kolmogorov-Smirnov test."""
    from scipy.stats import ks_2samp

    res = ks_2samp(_finite(reference, "reference"), _finite(window, "window"))
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class DriftTest:
    """One sample against its reference: PSI, KS statistic and p-value, the verdict."""

    name: str
    n_reference: int
    n_window: int
    psi: float
    ks_statistic: float
    p_value: float
    psi_threshold: float
    significance: float
    reference_mean: float
    window_mean: float

    @property
    def drift(self) -> bool:
        return self.psi > self.psi_threshold and self.p_value < self.significance

    def to_dict(self) -> dict[str, Any]:
        out = {k: (json_number(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["drift"] = self.drift
        return out

    def describe(self) -> str:
        return (
            f"{self.name}: PSI {self.psi:.3f} (> {self.psi_threshold:g}: "
            f"{'yes' if self.psi > self.psi_threshold else 'no'}), KS p={self.p_value:.2g}, "
            f"mean {self.window_mean:.3g} vs {self.reference_mean:.3g} (n={self.n_window})"
        )


def drift_test(
    name: str,
    reference: np.ndarray,
    window: np.ndarray,
    psi_threshold: float,
    significance: float,
) -> DriftTest:
    """PSI and KS of ``window`` against ``reference`` (both non-empty, finite)."""
    ref = _finite(reference, f"{name} reference")
    win = _finite(window, f"{name} window")
    stat, p = ks_test(ref, win)
    return DriftTest(
        name=name,
        n_reference=int(ref.size),
        n_window=int(win.size),
        psi=psi_quantile(ref, win),
        ks_statistic=stat,
        p_value=p,
        psi_threshold=float(psi_threshold),
        significance=float(significance),
        reference_mean=float(ref.mean()),
        window_mean=float(win.mean()),
    )


@dataclass(frozen=True)
class RateCheck:
    """The window's positive rate (Wilson interval at ``1 - significance``) and whether the
    expected rate (the reference's) lies outside it."""

    interval: Interval
    expected: float

    @property
    def outside(self) -> bool:
        i = self.interval
        return i.defined and not (i.low <= self.expected <= i.high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.interval.to_dict(),
            "expected": json_number(self.expected),
            "outside": self.outside,
        }

    def describe(self) -> str:
        return (
            f"positive rate {self.interval.describe()} at {self.interval.confidence:.0%}, "
            f"expected {self.expected:.3f}"
        )


def rate_check(positives: int, n: int, expected: float, significance: float) -> RateCheck:
    """Positive rate of a window against the expected rate."""
    if not (math.isfinite(expected) and 0.0 <= expected <= 1.0):
        raise ValueError(f"expected rate must be within 0..1, got {expected!r}")
    return RateCheck(wilson_interval(int(positives), int(n), 1.0 - significance), float(expected))


def realised_performance(
    truth: np.ndarray, predicted: np.ndarray, confidence: float = 0.95
) -> dict[str, Interval]:
    """Sensitivity, specificity and PPV (Wilson intervals with n) of predicted labels
    against outcomes (both boolean arrays, True = positive). An empty denominator gives an
    undefined interval (n=0), never 0 or 1."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"{t.shape} outcomes for {p.shape} predictions")
    tp = int(np.count_nonzero(t & p))
    fn = int(np.count_nonzero(t & ~p))
    tn = int(np.count_nonzero(~t & ~p))
    fp = int(np.count_nonzero(~t & p))
    return {
        "sensitivity": wilson_interval(tp, tp + fn, confidence),
        "specificity": wilson_interval(tn, tn + fp, confidence),
        "ppv": wilson_interval(tp, tp + fp, confidence),
    }
