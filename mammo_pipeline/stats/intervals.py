"""Confidence intervals: the :class:`Interval` value, Wilson score and bootstrap percentile.

Owns the interval arithmetic used by the gate for absolute thresholds (a proportion such as
precision = TP / (TP + FP) or recall = TP / positives, with its Wilson score interval) and
the percentile interval of a bootstrap distribution. An undefined interval (a proportion of
zero trials) is carried as NaN in Python and ``None`` in JSON, and every check on it fails
closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from statistics import NormalDist
from typing import Any

import numpy as np

from mammo_pipeline.stats.inputs import StatsInputError, check_confidence


def json_number(value: float | None) -> float | None:
    """``value`` as a JSON-safe float: ``None`` for missing, NaN or infinite."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def from_json_number(value: float | None) -> float:
    """Inverse of :func:`json_number`: ``None`` becomes NaN."""
    return math.nan if value is None else float(value)


def two_sided_z(confidence: float) -> float:
    """Standard normal quantile for a two-sided interval (1.959964 for 0.95)."""
    c = check_confidence(confidence)
    return NormalDist().inv_cdf(0.5 + c / 2.0)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    ``n`` is the number of trials (Wilson) or of bootstrap resamples (percentile). NaN
    fields mean *undefined* (e.g. a precision with no predicted positive): such an interval
    never passes a check.
    """

    point: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    method: str = "wilson"

    @property
    def defined(self) -> bool:
        """True when point, low and high are all finite numbers."""
        return all(math.isfinite(v) for v in (self.point, self.low, self.high))

    def lower_bound_at_least(self, minimum: float) -> bool:
        """True when the whole interval clears ``minimum`` (``low >= minimum``); fails closed."""
        return self.defined and self.low >= minimum

    def point_at_least(self, minimum: float) -> bool:
        """True when the point estimate reaches ``minimum``; False when undefined."""
        return self.defined and self.point >= minimum

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (undefined numbers become ``None``)."""
        return {
            "point": json_number(self.point),
            "low": json_number(self.low),
            "high": json_number(self.high),
            "n": int(self.n),
            "confidence": self.confidence,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        """Inverse of :meth:`to_dict`."""
        return cls(
            point=from_json_number(data["point"]),
            low=from_json_number(data["low"]),
            high=from_json_number(data["high"]),
            n=int(data["n"]),
            confidence=float(data["confidence"]),
            method=str(data["method"]),
        )

    def describe(self, digits: int = 3) -> str:
        """E.g. ``0.837 [0.700, 0.919] (n=43)``; ``undefined (n=0)`` when undefined."""
        if not self.defined:
            return f"undefined (n={self.n})"
        return (
            f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] (n={self.n})"
        )


def _as_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral | float | np.floating):
        raise StatsInputError(None, f"{name} must be a whole number, got {value!r}")
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise StatsInputError(None, f"{name} must be a whole number, got {value!r}")
    return int(value)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for ``successes`` out of ``n`` trials (no continuity correction).

    ``n == 0`` returns an *undefined* interval (NaN point and bounds, ``None`` in JSON): a
    proportion of nothing is not zero, and :meth:`Interval.lower_bound_at_least` is False
    for it, so a gate built on it fails closed. Negative counts or ``successes > n`` raise
    :class:`StatsInputError`.
    """
    k = _as_count(successes, "successes")
    m = _as_count(n, "n")
    c = check_confidence(confidence)
    if m < 0 or k < 0 or k > m:
        raise StatsInputError(None, f"need 0 <= successes <= n, got successes={k}, n={m}")
    if m == 0:
        return Interval(math.nan, math.nan, math.nan, 0, c, "wilson")
    z = two_sided_z(c)
    p = k / m
    z2n = z * z / m
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / m + z2n / (4.0 * m))
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges (no round-off)
    high = 1.0 if k == m else min(1.0, centre + half)
    return Interval(p, low, high, m, c, "wilson")


def percentile_interval(point: float, replicates: np.ndarray, confidence: float = 0.95) -> Interval:
    """Percentile bootstrap interval of ``replicates`` around the full-sample ``point``.

    Any non-finite replicate makes the interval undefined (it is never dropped silently).
    """
    c = check_confidence(confidence)
    r = np.asarray(replicates, dtype=np.float64).reshape(-1)
    if r.size == 0 or not np.isfinite(r).all() or not math.isfinite(point):
        return Interval(float(point), math.nan, math.nan, int(r.size), c, "percentile")
    alpha = 1.0 - c
    low, high = np.quantile(r, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(float(point), float(low), float(high), int(r.size), c, "percentile")
