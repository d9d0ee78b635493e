"""Statistics of a trustworthy promotion gate: intervals, rank metrics, paired comparison.

Pure numpy (no MLflow, no TensorFlow, no scikit-learn at run time). One module per job:

- :mod:`.inputs`    validation of labels, scores, count weights and tile ids
  (:class:`StatsInputError`);
- :mod:`.intervals` :class:`Interval`, the Wilson score interval of a proportion (absolute
  thresholds: precision, recall) and the bootstrap percentile interval;
- :mod:`.metrics`   ROC AUC, average precision, operating point and sensitivity at a
  specificity, with integer count weights, vectorised over bootstrap resamples;
- :mod:`.bootstrap` stratified resamples as multinomial count weights, seeded, chunked;
- :mod:`.delong`    DeLong's paired test of two correlated ROC AUCs;
- :mod:`.paired`    :func:`compare_paired`: candidate minus reference on the same tiles, at
  the reference's operating point, with paired bootstrap intervals.

Every undefined number is NaN in Python and ``None`` in JSON, and every check on it fails.

May import: errors only (pure NumPy); any stage may import it (the gate, the reports).
"""

from __future__ import annotations

from mammo_pipeline.stats.delong import DeLongTest
from mammo_pipeline.stats.inputs import StatsInputError
from mammo_pipeline.stats.intervals import Interval, percentile_interval, wilson_interval
from mammo_pipeline.stats.metrics import (
    OperatingPoint,
    average_precision,
    operating_point,
    roc_auc,
    sensitivity_at_specificity,
    threshold_for_specificity,
)
from mammo_pipeline.stats.paired import (
    METRICS,
    MIN_RESAMPLES,
    PairedComparison,
    PairedDelta,
    compare_paired,
)

__all__ = [
    "METRICS",
    "MIN_RESAMPLES",
    "DeLongTest",
    "Interval",
    "OperatingPoint",
    "PairedComparison",
    "PairedDelta",
    "StatsInputError",
    "average_precision",
    "compare_paired",
    "operating_point",
    "percentile_interval",
    "roc_auc",
    "sensitivity_at_specificity",
    "threshold_for_specificity",
    "wilson_interval",
]
