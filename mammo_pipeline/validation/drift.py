"""Drift of a batch against the reference profile of the training data.

Two named statistics, thresholds from the settings:

- intensity: the Population Stability Index (PSI) of the tile-mean-intensity histogram,
  ``sum((b - r) * ln(b / r))`` over bins of proportions (empty bins floored at 1e-4);
  drift when PSI > ``drift_psi_threshold`` (0.1 slight, 0.2 significant by convention);
- class balance: the absolute change of the positive fraction, drift when it exceeds
  ``drift_class_balance_threshold``; the per-class distributions are reported as well.

Drift is reported; it quarantines a file only when ``drift_blocks`` is set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.validation.reference import IntensityProfile

_FLOOR = 1e-4


def psi(reference_counts: list[int] | np.ndarray, batch_counts: list[int] | np.ndarray) -> float:
    """Population Stability Index of two histograms over the same bins."""
    r = np.asarray(reference_counts, dtype=np.float64)
    b = np.asarray(batch_counts, dtype=np.float64)
    if r.sum() <= 0 or b.sum() <= 0:
        raise ValueError("PSI needs two non-empty histograms")
    r = np.maximum(r / r.sum(), _FLOOR)
    b = np.maximum(b / b.sum(), _FLOOR)
    return float(np.sum((b - r) * np.log(b / r)))


def compare(
    reference: IntensityProfile | None, batch: IntensityProfile, settings: Settings
) -> dict[str, Any]:
    """The drift report of ``batch`` against ``reference`` (a plain, JSON-ready dict)."""
    report: dict[str, Any] = {
        "statistic": "psi",
        "psi": None,
        "psi_threshold": settings.drift_psi_threshold,
        "intensity_drift": False,
        "class_balance_statistic": "abs_change_positive_fraction",
        "class_balance_threshold": settings.drift_class_balance_threshold,
        "class_balance_drift": False,
        "reference_records": reference.records if reference else 0,
        "batch_records": batch.records,
        "reference_positive_fraction": reference.positive_fraction if reference else None,
        "batch_positive_fraction": batch.positive_fraction,
        "positive_fraction_change": None,
        "reference_label_distribution": reference.label_distribution() if reference else {},
        "batch_label_distribution": batch.label_distribution(),
        "drifted": False,
        "blocks": False,
    }
    if reference is None or not reference.records:
        report["summary"] = "no reference profile yet (the first validated data becomes it)"
        return report
    if not batch.records:
        report["summary"] = "no well-formed records to compare"
        return report
    report["psi"] = round(psi(reference.intensity_counts, batch.intensity_counts), 6)
    report["intensity_drift"] = report["psi"] > settings.drift_psi_threshold
    ref_pos, batch_pos = reference.positive_fraction, batch.positive_fraction
    if ref_pos is not None and batch_pos is not None:
        change = abs(batch_pos - ref_pos)
        report["positive_fraction_change"] = round(change, 6)
        report["class_balance_drift"] = change > settings.drift_class_balance_threshold
    report["drifted"] = bool(report["intensity_drift"] or report["class_balance_drift"])
    report["blocks"] = report["drifted"] and settings.drift_blocks
    words = [
        f"PSI {report['psi']:.3f} (threshold {settings.drift_psi_threshold})"
        + (" DRIFT" if report["intensity_drift"] else ""),
    ]
    if report["positive_fraction_change"] is not None:
        words.append(
            f"positive fraction {batch_pos:.3f} vs {ref_pos:.3f} "
            f"(change {report['positive_fraction_change']:.3f}, threshold "
            f"{settings.drift_class_balance_threshold})"
            + (" DRIFT" if report["class_balance_drift"] else "")
        )
    report["summary"] = "; ".join(words)
    return report


def batch_profile(profiles: list[IntensityProfile], bins: int) -> IntensityProfile:
    """The union of several file profiles (for the run-level drift report)."""
    total = IntensityProfile.empty(bins)
    for p in profiles:
        total.add(p)
    return total
