"""Outcome feedback: what became of an answered image (biopsy results arrive weeks later).

One :class:`Feedback` per ``request_id``: the outcome (``malignant``, ``benign`` or
``normal``), its source (``biopsy``, ``follow-up`` or ``reader``), who sent it and when.
The model's target is a lesion (``label_normal``: benign and malignant lesions are both
positive), so ``malignant`` and ``benign`` count as positives and ``normal`` as a negative
(:func:`is_positive`).

The bulk file of ``mammo monitor feedback FILE.csv`` has a header with ``request_id``,
``outcome`` and ``source``, optionally ``who`` (else the caller's identity) and ``time``
(ISO 8601, else now). :func:`read_feedback_csv` refuses the whole file on the first bad row,
naming the line and the problem (nothing is loaded from a bad file).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from mammo_pipeline.errors import DataError, MammoError

OUTCOMES: Final = ("malignant", "benign", "normal")
POSITIVE_OUTCOMES: Final = frozenset({"malignant", "benign"})
SOURCES: Final = ("biopsy", "follow-up", "reader")
CSV_REQUIRED: Final = ("request_id", "outcome", "source")
_MAX_TEXT = 128


class FeedbackError(MammoError):
    """Feedback that cannot be recorded; ``status`` is the HTTP status it answers with
    (404 unknown request id, 409 a different outcome already recorded, 422 a bad value)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    outcome: str
    source: str
    who: str
    time: float = 0.0

    def problem(self) -> str | None:
        """What is wrong with the values, or ``None``."""
        if not self.request_id or len(self.request_id) > _MAX_TEXT:
            return "request_id must be 1..128 characters"
        if self.outcome not in OUTCOMES:
            return f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}"
        if self.source not in SOURCES:
            return f"source must be one of {', '.join(SOURCES)}, got {self.source!r}"
        if not self.who or len(self.who) > _MAX_TEXT:
            return "who must be 1..128 characters"
        if not math.isfinite(self.time) or self.time <= 0:
            return "time must be a positive number of seconds since the epoch"
        return None

    def checked(self) -> Feedback:
        """``self``, or :class:`FeedbackError` (422) naming the bad value."""
        problem = self.problem()
        if problem:
            raise FeedbackError(problem, status=422)
        return self

    def same_as(self, other: Feedback) -> bool:
        """The same statement (outcome and source); who and when may differ on a resend."""
        return (self.outcome, self.source) == (other.outcome, other.source)


def make_feedback(
    request_id: str, outcome: str, source: str, who: str, at: float | None = None
) -> Feedback:
    """A checked :class:`Feedback` (values stripped and lower-cased; time defaults to now)."""
    return Feedback(
        request_id=str(request_id).strip(),
        outcome=str(outcome).strip().lower(),
        source=str(source).strip().lower(),
        who=str(who).strip(),
        time=time.time() if at is None else float(at),
    ).checked()


def is_positive(outcome: str) -> bool:
    """True for a lesion (benign or malignant): the model's target."""
    return outcome in POSITIVE_OUTCOMES


def _parse_time(text: str, where: str) -> float:
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise DataError(None, f"{where}: time {text!r} is not an ISO 8601 date-time") from None


def read_feedback_csv(path: Path, who: str) -> list[Feedback]:
    """Every row of a feedback CSV, checked; ``who`` fills rows without one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read it: {type(exc).__name__}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)} (need {CSV_REQUIRED})")
    out: list[Feedback] = []
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        where = f"{path}: line {line}"
        at = _parse_time(row["time"], where) if row.get("time") else None
        try:
            out.append(
                make_feedback(
                    row["request_id"], row["outcome"], row["source"], row.get("who") or who, at
                )
            )
        except FeedbackError as exc:
            raise DataError(None, f"{where}: {exc}") from None
    if not out:
        raise DataError(path, "no feedback rows")
    return out
