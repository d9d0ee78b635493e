"""Per-tile predictions of a model on the held-out test set: the evidence the promotion gate
recomputes its statistics from.

One CSV per evaluated run (artifact ``evaluation/test_predictions.csv``), one row per test
tile, in the order of the test split files (sorted by name) and of the tiles in each file:

``tile_id`` (``<split file>#<index>``), ``label`` (0..4), ``score`` (the model's probability,
written with ``repr`` so the float round-trips exactly).

Its sha256 is recorded on the run (tag ``test_predictions_sha256``) when it is logged, so a
replaced file is detected. A non-finite score is refused when writing and when reading: a
missing score is an error, never a negative.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_pipeline.errors import DataError

PREDICTIONS_FILE = "test_predictions.csv"
PREDICTIONS_DIGEST_TAG = "test_predictions_sha256"
HEADER = ("tile_id", "label", "score")


@dataclass(frozen=True)
class TilePredictions:
    """Scores of one model on the test tiles; ``labels`` are the 5-class labels."""

    tile_ids: tuple[str, ...]
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.tile_ids)
        if self.labels.shape != (n,) or self.scores.shape != (n,):
            raise DataError(None, f"predictions: {n} tile ids, {self.labels.shape} labels, "
                            f"{self.scores.shape} scores")  # fmt: skip
        bad = np.flatnonzero(~np.isfinite(self.scores))
        if bad.size:
            raise DataError(
                None, f"predictions: score of tile {self.tile_ids[bad[0]]} is not finite"
            )

    def __len__(self) -> int:
        return len(self.tile_ids)

    @property
    def positive(self) -> np.ndarray:
        return (self.labels > 0).astype(np.int64)

    def to_csv(self) -> bytes:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(HEADER)
        for tile, label, score in zip(self.tile_ids, self.labels, self.scores, strict=True):
            writer.writerow((tile, int(label), repr(float(score))))
        return buf.getvalue().encode()

    def write(self, path: Path) -> str:
        """Write the CSV; returns its sha256."""
        return write_evidence(path, self.to_csv())


def write_evidence(path: Path, data: bytes) -> str:
    """Write an evidence file (predictions CSV) and return the sha256 the gate re-checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def tile_ids_for(split_name: str, n: int) -> list[str]:
    return [f"{split_name}#{i}" for i in range(n)]


def parse_predictions(data: bytes, source: str = PREDICTIONS_FILE) -> TilePredictions:
    """Read the CSV; any malformed row is a :class:`DataError` naming the row."""
    text = data.decode("utf-8", errors="strict")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != HEADER:
        raise DataError(source, f"not a predictions file (header must be {','.join(HEADER)})")
    ids: list[str] = []
    labels: list[int] = []
    scores: list[float] = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            tile, label, score = row
            value = float(score)
            if not math.isfinite(value):
                raise ValueError(f"score {score!r} is not finite")
            ids.append(tile)
            labels.append(int(label))
            scores.append(value)
        except ValueError as exc:
            raise DataError(source, f"row {number}: {exc}") from None
    if len(set(ids)) != len(ids):
        raise DataError(source, "duplicate tile ids")
    return TilePredictions(
        tuple(ids), np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    )


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
