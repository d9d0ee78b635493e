"""The per-image prediction record: what the service keeps of each answer.

Privacy: a record holds no pixels, no DICOM identifiers and no client file names: only the
time, the model, the endpoint, the answer (score, label, threshold, latency, status) and a
few numbers about the input (:class:`InputStats`). ``request_id`` is random
(:func:`new_request_id`) and identifies one scored image: a ``/predict_batch`` answer
carries one per item.

A record with ``status="ok"`` must carry a finite score in [0, 1] and a label: a missing or
non-finite score is an error (``status="nonfinite"`` or ``"error"``, score ``None``), never
a negative. :meth:`PredictionRecord.problem` says what is wrong with a record (the logger
drops such records and counts them; the store refuses them).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import numpy as np

ENDPOINTS: Final = ("predict", "predict_batch", "analyze")
STATUSES: Final = ("ok", "nonfinite", "error")
LABELS: Final = ("positive", "negative")
#: Where the pixel spacing came from (``/analyze``: the DICOM header, the form, the default).
SPACING_SOURCES: Final = ("dicom", "form", "default")
#: A model-input pixel counts as saturated at the top of the 0..255 scale (as the validation
#: profile counts raw 255 pixels).
SATURATED_AT: Final = 254.5
#: Decimals kept of the input mean and std (grey levels): float round-off of the resize is
#: not drift, and finer differences mean nothing for an 8-bit image.
STAT_DECIMALS: Final = 2
_MAX_TEXT = 128


def new_request_id() -> str:
    """A random id for one scored image (32 hex characters; carries no information)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class InputStats:
    """Numbers about one input image; every field may be unknown (``None``).

    ``width``/``height``/``bit_depth``: the upload as decoded; ``pixel_spacing_mm`` and its
    ``spacing_source``; ``input_mean``/``input_std``/``saturated_fraction``: the model input
    (float32, 0..255, :mod:`mammo_pipeline.data.preprocess`); ``tiles_scored``: ``/analyze``.
    """

    width: int | None = None
    height: int | None = None
    bit_depth: int | None = None
    pixel_spacing_mm: float | None = None
    spacing_source: str | None = None
    input_mean: float | None = None
    input_std: float | None = None
    saturated_fraction: float | None = None
    tiles_scored: int | None = None
    #: the image was declared SYNTHETIC (by the client or the file's own marker); None: unknown
    synthetic: bool | None = None


def model_input_stats(model_input: np.ndarray) -> tuple[float, float, float]:
    """(mean, std, saturated fraction) of a model input (H x W x 1 or H x W, 0..255).

    For ``/analyze`` pass the scored windows stacked (N x H x W x 1): the figures are over all
    their pixels. Raises ``ValueError`` for an empty or non-finite input.
    """
    x = np.asarray(model_input, dtype=np.float32)
    if x.size == 0:
        raise ValueError("model input is empty")
    mean = float(x.mean(dtype=np.float64))
    std = float(x.std(dtype=np.float64))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError("model input has non-finite pixels")
    saturated = float(np.count_nonzero(x >= SATURATED_AT)) / x.size
    return round(mean, STAT_DECIMALS), round(std, STAT_DECIMALS), saturated


def input_stats(
    model_input: np.ndarray,
    *,
    width: int | None = None,
    height: int | None = None,
    bit_depth: int | None = None,
    pixel_spacing_mm: float | None = None,
    spacing_source: str | None = None,
    tiles_scored: int | None = None,
    synthetic: bool | None = None,
) -> InputStats:
    """:class:`InputStats` of an upload from its model input and what the decoder knew."""
    mean, std, saturated = model_input_stats(model_input)
    return InputStats(
        width=width,
        height=height,
        bit_depth=bit_depth,
        pixel_spacing_mm=pixel_spacing_mm,
        spacing_source=spacing_source,
        input_mean=mean,
        input_std=std,
        saturated_fraction=saturated,
        tiles_scored=tiles_scored,
        synthetic=synthetic,
    )


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One scored image. ``time`` is seconds since the epoch (UTC); ``latency_ms`` the time
    the request took in the service (for a batch: the whole request)."""

    request_id: str
    model_name: str
    model_version: str
    endpoint: str
    status: str
    score: float | None
    label: str | None
    threshold: float | None
    latency_ms: float | None = None
    time: float = 0.0
    inputs: InputStats = InputStats()

    @classmethod
    def now(cls, **values: Any) -> PredictionRecord:
        """A record stamped with the current time."""
        return cls(time=time.time(), **values)

    def problem(self) -> str | None:
        """What makes this record unusable, or ``None``."""
        if not self.request_id or len(self.request_id) > _MAX_TEXT:
            return "request_id must be 1..128 characters"
        if not self.model_name or not self.model_version:
            return "model name and version are required"
        if self.endpoint not in ENDPOINTS:
            return f"endpoint must be one of {', '.join(ENDPOINTS)}, got {self.endpoint!r}"
        if self.status not in STATUSES:
            return f"status must be one of {', '.join(STATUSES)}, got {self.status!r}"
        if not math.isfinite(self.time) or self.time <= 0:
            return "time must be a positive number of seconds since the epoch"
        if self.status == "ok":
            if self.score is None or not math.isfinite(self.score) or not 0 <= self.score <= 1:
                return f"an ok record needs a finite score in [0, 1], got {self.score!r}"
            if self.label not in LABELS:
                return f"an ok record needs label positive|negative, got {self.label!r}"
            if self.threshold is None or not math.isfinite(self.threshold):
                return "an ok record needs a finite threshold"
        elif self.score is not None or self.label is not None:
            return f"a {self.status} record carries no score and no label"
        src = self.inputs.spacing_source
        if src is not None and src not in SPACING_SOURCES:
            return f"spacing_source must be one of {', '.join(SPACING_SOURCES)}, got {src!r}"
        return None

    def to_row(self) -> dict[str, Any]:
        """Flat column -> value mapping (the store's schema, :data:`COLUMNS`)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "inputs"}
        row.update(asdict(self.inputs))
        if row["synthetic"] is not None:
            row["synthetic"] = int(row["synthetic"])
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PredictionRecord:
        """Inverse of :meth:`to_row`."""
        values = {k: row.get(k) for k in INPUT_COLUMNS}
        if values["synthetic"] is not None:
            values["synthetic"] = bool(values["synthetic"])
        inputs = InputStats(**values)
        return cls(**{k: row.get(k) for k in RECORD_COLUMNS}, inputs=inputs)


RECORD_COLUMNS: Final = tuple(f.name for f in fields(PredictionRecord) if f.name != "inputs")
INPUT_COLUMNS: Final = tuple(f.name for f in fields(InputStats))
COLUMNS: Final = RECORD_COLUMNS + INPUT_COLUMNS
