"""Checks on the arrays handed to the statistics: labels, scores, count weights, tile ids.

Owns :class:`StatsInputError` and the conversions of caller arrays into the exact forms the
statistics use (1-D ``bool`` labels, 1-D finite ``float64`` scores, 1-D non-negative integer
count weights). Nothing is dropped or repaired: a NaN or infinite score, a label other than
0/1, a length mismatch or tiles in a different order is an error whose one-line message
names the array, the first offending index and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.errors import DataError


class StatsInputError(DataError):
    """Arrays that cannot be compared or scored as given (the message says which and why).

    ``path`` is the caller's name for where the predictions came from (a predictions file,
    a run id), or ``None``.
    """

    def __init__(self, source: Path | str | None, problem: str) -> None:
        super().__init__(source, problem)


def as_labels(y_true: Any, *, name: str = "labels", source: str | None = None) -> np.ndarray:
    """``y_true`` as a 1-D ``bool`` array (True = positive); only 0/1 (or booleans) allowed."""
    try:
        y = np.asarray(y_true)
    except (TypeError, ValueError) as exc:  # ragged input
        raise StatsInputError(source, f"{name}: not an array of 0/1 labels ({exc})") from None
    if y.ndim != 1:
        raise StatsInputError(source, f"{name}: expected a 1-D array, got shape {y.shape}")
    if y.size == 0:
        raise StatsInputError(source, f"{name}: empty, there is nothing to evaluate")
    if y.dtype == bool:
        return y.copy()
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise StatsInputError(source, f"{name}: expected 0/1 numbers, got dtype {y.dtype}")
    bad = np.flatnonzero((y != 0) & (y != 1))  # NaN compares unequal to both
    if bad.size:
        i = int(bad[0])
        raise StatsInputError(
            source,
            f"{name}: {bad.size} value(s) are not 0 or 1 (first at index {i}: {y[i]!r})",
        )
    return y == 1


def as_scores(
    scores: Any, n: int, *, name: str = "scores", source: str | None = None
) -> np.ndarray:
    """``scores`` as a 1-D finite ``float64`` array of length ``n`` (one per tile)."""
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatsInputError(source, f"{name}: not an array of numbers ({exc})") from None
    if s.ndim == 2 and s.shape[1] == 1:  # Keras predict() shape (n, 1)
        s = s[:, 0]
    if s.ndim != 1:
        raise StatsInputError(source, f"{name}: expected a 1-D array, got shape {s.shape}")
    if s.shape[0] != n:
        raise StatsInputError(
            source,
            f"{name}: {s.shape[0]} value(s) for {n} labelled tiles; scores must be given "
            "for the same tiles, in the same order, as the labels",
        )
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        i = int(bad[0])
        raise StatsInputError(
            source,
            f"{name}: {bad.size} non-finite score(s) (first at index {i}: {s[i]}); a missing "
            "score is an error, never a negative",
        )
    return s


def as_count_weights(
    sample_weight: Any, n: int, *, name: str = "sample_weight", source: str | None = None
) -> np.ndarray:
    """Count weights (how many times each tile is drawn) as 1-D ``float64`` integers >= 0."""
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StatsInputError(source, f"{name}: not an array of counts ({exc})") from None
    if w.ndim != 1 or w.shape[0] != n:
        raise StatsInputError(
            source, f"{name}: expected {n} counts (one per tile), got shape {w.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0) | (w != np.round(w)))
    if bad.size:
        i = int(bad[0])
        raise StatsInputError(
            source,
            f"{name}: {bad.size} value(s) are not non-negative integer counts "
            f"(first at index {i}: {w[i]})",
        )
    return w


def check_fraction(value: float, name: str, *, open_low: bool = False) -> float:
    """A finite number in [0, 1] (or (0, 1] with ``open_low``), returned as ``float``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise StatsInputError(None, f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > 1 or v < 0 or (open_low and v == 0):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise StatsInputError(None, f"{name} must lie in {interval}, got {value!r}")
    return v


def check_confidence(confidence: float) -> float:
    """A confidence level strictly between 0 and 1."""
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise StatsInputError(None, f"confidence must be a number, got {confidence!r}") from None
    if not (0.0 < c < 1.0):
        raise StatsInputError(None, f"confidence must lie strictly in (0, 1), got {confidence!r}")
    return c


def check_same_tiles(
    candidate_ids: Sequence[Any] | np.ndarray | None,
    reference_ids: Sequence[Any] | np.ndarray | None,
    n: int,
    *,
    source: str | None = None,
) -> None:
    """Both id lists absent, or both of length ``n`` and equal position by position."""
    if candidate_ids is None and reference_ids is None:
        return
    if candidate_ids is None or reference_ids is None:
        raise StatsInputError(
            source, "tile ids given for only one model; give both (or neither) to check pairing"
        )
    cand = np.asarray(candidate_ids)
    ref = np.asarray(reference_ids)
    for name, ids in (("candidate tile ids", cand), ("reference tile ids", ref)):
        if ids.ndim != 1 or ids.shape[0] != n:
            raise StatsInputError(
                source, f"{name}: expected {n} ids (one per labelled tile), got shape {ids.shape}"
            )
    differ = np.flatnonzero(cand != ref)
    if differ.size:
        i = int(differ[0])
        raise StatsInputError(
            source,
            f"the models were not scored on the same tiles in the same order: {differ.size} "
            f"position(s) differ (first at index {i}: candidate {cand[i]!r}, "
            f"reference {ref[i]!r})",
        )
