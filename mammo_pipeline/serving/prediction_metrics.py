"""The prediction metrics the service exports on ``/metrics`` (Prometheus), beside BentoML's own.

Defined with ``bentoml.metrics`` like the service's ``mammo_nonfinite_scores``: BentoML 1.4
defers importing ``prometheus_client`` to the first use, so in a ``bentoml serve`` worker the
metrics are created in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set in the workers'
environment) and BentoML's ``/metrics`` collects every worker's values. Outside a server (a
test, the CLI) they land in ``prometheus_client``'s default registry.

- ``mammo_predictions_total{model_version,endpoint,label}``: one per scored image; ``label``
  is ``positive``, ``negative`` or ``error`` (a non-finite or missing score and a failed
  answer are errors, never negatives);
- ``mammo_prediction_score{model_version,endpoint}``: histogram of the scores of ``ok``
  answers, buckets 0.05 .. 1.0 by 0.05;
- ``mammo_input_mean``, ``mammo_input_std``, ``mammo_input_saturated_fraction``
  ``{model_version}``: histograms of the model input's statistics (the record's
  :class:`~mammo_pipeline.monitoring.records.InputStats`);
- ``mammo_prediction_log_dropped_total{reason}`` (``queue_full``, ``write_error``,
  ``invalid``) and ``mammo_prediction_log_written_total``: the prediction log's own health.

The service calls :func:`observe` with each :class:`PredictionRecord` it logs and gives
:func:`on_drop` / :func:`on_written` to its
:class:`~mammo_pipeline.monitoring.writer.PredictionLogger`. None of them ever raises:
metrics never fail a prediction. :data:`METRIC_NAMES` lists every exported series name (the
dashboard test checks the dashboard's queries against it).
"""

from __future__ import annotations

import logging
import math
from typing import Final

import bentoml

from mammo_pipeline.monitoring.records import ENDPOINTS, LABELS, PredictionRecord
from mammo_pipeline.monitoring.writer import DROP_REASONS

logger = logging.getLogger(__name__)

#: Score buckets: 0.05, 0.10, ..., 1.00 (+Inf is added by Prometheus).
SCORE_BUCKETS: Final = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: Input mean and std of the model input, grey levels 0..255.
MEAN_BUCKETS: Final = tuple(float(v) for v in range(10, 251, 10)) + (255.0,)
STD_BUCKETS: Final = tuple(float(v) for v in range(5, 131, 5))
#: Fraction of saturated pixels: ``le="0.0"`` counts inputs with none.
SATURATED_BUCKETS: Final = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
ERROR_LABEL: Final = "error"

PREDICTIONS = bentoml.metrics.Counter(
    name="mammo_predictions",
    documentation="Scored images by model version, endpoint and label "
    "(positive|negative|error; a missing or non-finite score is an error, never a negative)",
    labelnames=["model_version", "endpoint", "label"],
)
SCORE = bentoml.metrics.Histogram(
    name="mammo_prediction_score",
    documentation="Scores of answered images (status ok) by model version and endpoint",
    labelnames=["model_version", "endpoint"],
    buckets=SCORE_BUCKETS,
)
INPUT_MEAN = bentoml.metrics.Histogram(
    name="mammo_input_mean",
    documentation="Mean grey level (0..255) of the model input, by model version",
    labelnames=["model_version"],
    buckets=MEAN_BUCKETS,
)
INPUT_STD = bentoml.metrics.Histogram(
    name="mammo_input_std",
    documentation="Standard deviation (grey levels) of the model input, by model version",
    labelnames=["model_version"],
    buckets=STD_BUCKETS,
)
INPUT_SATURATED = bentoml.metrics.Histogram(
    name="mammo_input_saturated_fraction",
    documentation="Fraction of saturated pixels of the model input, by model version",
    labelnames=["model_version"],
    buckets=SATURATED_BUCKETS,
)
LOG_DROPPED = bentoml.metrics.Counter(
    name="mammo_prediction_log_dropped",
    documentation="Prediction records the log dropped (queue_full, write_error, invalid)",
    labelnames=["reason"],
)
LOG_WRITTEN = bentoml.metrics.Counter(
    name="mammo_prediction_log_written",
    documentation="Prediction records written to the monitoring store",
)
for _reason in DROP_REASONS:  # every reason exported from the start, at 0
    LOG_DROPPED.labels(reason=_reason)

#: Every series name exported here, as Prometheus queries name them.
METRIC_NAMES: Final = frozenset(
    {
        "mammo_predictions_total",
        *(
            f"{base}{suffix}"
            for base in (
                "mammo_prediction_score",
                "mammo_input_mean",
                "mammo_input_std",
                "mammo_input_saturated_fraction",
            )
            for suffix in ("_bucket", "_sum", "_count")
        ),
        "mammo_prediction_log_dropped_total",
        "mammo_prediction_log_written_total",
    }
)

_failed_once = False


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def outcome_label(record: PredictionRecord) -> str:
    """``positive`` / ``negative`` for an ok record with a valid score, else ``error``."""
    ok = (
        record.status == "ok"
        and record.label in LABELS
        and _finite(record.score)
        and 0.0 <= float(record.score) <= 1.0  # type: ignore[arg-type]
    )
    return str(record.label) if ok else ERROR_LABEL


def observe(record: PredictionRecord) -> None:
    """Count one scored image and its statistics. Never raises (a failure is logged once)."""
    global _failed_once
    try:
        version = str(record.model_version or "unknown")
        endpoint = record.endpoint if record.endpoint in ENDPOINTS else "other"
        label = outcome_label(record)
        PREDICTIONS.labels(model_version=version, endpoint=endpoint, label=label).inc()
        if label != ERROR_LABEL:
            SCORE.labels(model_version=version, endpoint=endpoint).observe(float(record.score))
        stats = record.inputs
        for metric, value in (
            (INPUT_MEAN, stats.input_mean),
            (INPUT_STD, stats.input_std),
            (INPUT_SATURATED, stats.saturated_fraction),
        ):
            if _finite(value):
                metric.labels(model_version=version).observe(float(value))
    except Exception:  # noqa: BLE001 - metrics never fail a prediction
        if not _failed_once:
            _failed_once = True
            logger.exception("prediction metrics: cannot record an observation")


def on_drop(reason: str, n: int) -> None:
    """``PredictionLogger``'s ``on_drop``: ``n`` records dropped for ``reason``."""
    LOG_DROPPED.labels(reason=reason if reason in DROP_REASONS else "other").inc(n)


def on_written(n: int) -> None:
    """``PredictionLogger``'s ``on_written``: ``n`` records written to the store."""
    LOG_WRITTEN.inc(n)
