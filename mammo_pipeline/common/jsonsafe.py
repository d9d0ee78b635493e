"""Numbers that JSON (Airflow XCom, MLflow tags, HTTP answers) can carry.

NaN and infinities are not JSON. Two conventions, one place each:

* :func:`to_json_number` / :func:`from_json_number`: a non-finite float travels as the
  string ``"nan"``/``"inf"``/``"-inf"`` and comes back as a float (a gate decision keeps the
  fact that a metric was NaN, which matters: it fails the gate);
* :func:`finite_or_none`: a value that is not a finite number becomes ``None`` (reports and
  service metadata, where "unknown" is the honest answer);
* :func:`clean`: the first convention applied through nested dicts and lists.
"""

from __future__ import annotations

import math
from typing import Any

_NON_FINITE = {"nan", "inf", "-inf"}


def to_json_number(value: Any) -> Any:
    """Floats that JSON cannot carry become strings; everything else passes unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def from_json_number(value: Any) -> Any:
    """The inverse of :func:`to_json_number`."""
    if isinstance(value, str) and value in _NON_FINITE:
        return float(value)
    return value


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite number, else ``None``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def clean(value: Any, *, non_finite: str = "string") -> Any:
    """``value`` with every non-finite float in nested dicts/lists/tuples made JSON-safe:
    as a string (``non_finite="string"``) or as ``None`` (``non_finite="none"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if non_finite == "none" else str(value)
    if isinstance(value, dict):
        return {k: clean(v, non_finite=non_finite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v, non_finite=non_finite) for v in value]
    return value
