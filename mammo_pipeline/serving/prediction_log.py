"""The service's side of monitoring (docs/monitoring.md): every scored image gets a
``request_id`` (returned in the answer), one privacy-safe record queued to the prediction log
(never blocking, never failing the request) and its Prometheus metrics; ``POST /feedback``
writes an outcome for a ``request_id``.

The service holds one :class:`PredictionMonitor` per worker process. With
``MAMMO_MONITOR_LOG_PREDICTIONS=false`` nothing is logged (the request ids and the metrics
stay): the serving benchmark measures the cost of logging with it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.monitoring.feedback import FeedbackError, make_feedback
from mammo_pipeline.monitoring.records import (
    InputStats,
    PredictionRecord,
    input_stats,
    new_request_id,
)
from mammo_pipeline.monitoring.store import PredictionStore, open_store
from mammo_pipeline.monitoring.writer import PredictionLogger
from mammo_pipeline.serving import prediction_metrics

logger = logging.getLogger(__name__)

#: Seconds ``POST /feedback`` waits for this worker's queued records to be written, so that
#: feedback on an answer given a moment ago finds its record.
FLUSH_BEFORE_FEEDBACK_S = 2.0


class PredictionMonitor:
    """Request ids, the prediction log and the prediction metrics of one service worker."""

    def __init__(self, settings: Settings, model_name: str, model_version: str) -> None:
        self.settings = settings
        self.model_name = model_name
        self.model_version = model_version
        self.enabled = settings.monitor_log_predictions
        self.log = PredictionLogger.from_settings(
            settings, on_drop=prediction_metrics.on_drop, on_written=prediction_metrics.on_written
        )
        self._store: PredictionStore | None = None

    def record(
        self,
        endpoint: str,
        *,
        score: float | None,
        threshold: float | None,
        latency_ms: float | None,
        model_input: np.ndarray | None,
        **known: Any,
    ) -> str:
        """Log one scored image; return its new ``request_id``. ``known``: what the decoder
        knew, the keyword arguments of :func:`~mammo_pipeline.monitoring.records.input_stats`
        (width, height, pixel spacing and its source, tiles scored, synthetic). A missing or
        non-finite score is recorded as ``nonfinite`` (never a negative). Never raises."""
        rid = new_request_id()
        try:
            ok = score is not None and bool(np.isfinite(score))
            label = None
            if ok and threshold is not None:
                label = "positive" if float(score) >= threshold else "negative"
            rec = PredictionRecord.now(
                request_id=rid,
                model_name=self.model_name,
                model_version=self.model_version,
                endpoint=endpoint,
                status="ok" if ok else "nonfinite",
                score=float(score) if ok else None,
                label=label,
                threshold=threshold,
                latency_ms=latency_ms,
                inputs=self._stats(model_input, **known),
            )
            prediction_metrics.observe(rec)
            if self.enabled:
                self.log.log(rec)
        except Exception:  # noqa: BLE001 - monitoring never fails a prediction
            logger.warning("prediction %s not logged", rid, exc_info=True)
        return rid

    @staticmethod
    def _stats(model_input: np.ndarray | None, **known: Any) -> InputStats:
        if model_input is None:
            return InputStats(**known)
        try:
            return input_stats(model_input, **known)
        except ValueError:  # an empty or non-finite input: its statistics are unknown
            return InputStats(**known)

    def feedback(self, body: Any, who: str) -> dict[str, Any]:
        """Record an outcome (``{"request_id", "outcome", "source"[, "who"]}``) sent by ``who``
        (how the client authenticated; a name the client states is kept beside it).
        Raises :class:`FeedbackError` (``status``: 404, 409 or 422) with the reason."""
        if not isinstance(body, dict):
            raise FeedbackError("the body must be a JSON object with request_id, outcome and "
                                "source", status=422)  # fmt: skip
        missing = [k for k in ("request_id", "outcome", "source") if not body.get(k)]
        if missing:
            raise FeedbackError(f"missing {', '.join(missing)}", status=422)
        stated = str(body.get("who") or "").strip()
        sender = f"{stated} ({who})" if stated else who
        fb = make_feedback(body["request_id"], body["outcome"], body["source"], sender)
        self.log.flush(timeout=FLUSH_BEFORE_FEEDBACK_S)
        if self._store is None:
            self._store = open_store(self.settings)
        result = self._store.add_feedback([fb])
        return {"request_id": fb.request_id, "outcome": fb.outcome, "source": fb.source,
                "who": fb.who, **result}  # fmt: skip

    def close(self) -> None:
        self.log.close()
