"""The reference profile of the current training data (everything in ``validated/``).

Kept as ``<reports>/reference_profile.json``: a histogram of per-tile mean intensity over fixed
bins on [0, 256) and the class counts. It is built from the same per-record profiles that the
suite validates and grows each time a file passes, so it always describes the data the next
training run will see. Drift statistics compare a new batch against it (:mod:`.drift`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammo_pipeline.data.schema import LABEL_VALUES
from mammo_pipeline.validation.movement import write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

REFERENCE_FILE = "reference_profile.json"


@dataclass(slots=True)
class IntensityProfile:
    """Histogram of tile mean intensity + class counts of a set of records."""

    bins: int
    intensity_counts: list[int]
    label_counts: dict[str, int] = field(default_factory=dict)
    records: int = 0
    files: list[str] = field(default_factory=list)
    updated_at: str | None = None

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 256.0, self.bins + 1)

    @property
    def labelled(self) -> int:
        return sum(self.label_counts.values())

    @property
    def positive_fraction(self) -> float | None:
        total = self.labelled
        if not total:
            return None
        return sum(n for k, n in self.label_counts.items() if k != "0") / total

    def label_distribution(self) -> dict[str, float]:
        total = self.labelled
        return {k: (n / total if total else 0.0) for k, n in sorted(self.label_counts.items())}

    @classmethod
    def empty(cls, bins: int) -> IntensityProfile:
        return cls(bins=bins, intensity_counts=[0] * bins)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, bins: int, name: str | None = None
    ) -> IntensityProfile:
        """The profile of the well-formed records of one record frame."""
        profile = cls.empty(bins)
        if len(frame):
            means = frame["pixel_mean"].to_numpy(dtype=np.float64)
            means = means[np.isfinite(means)]
            counts, _ = np.histogram(np.clip(means, 0.0, 255.999), bins=profile.edges)
            profile.intensity_counts = [int(c) for c in counts]
            profile.records = int(means.size)
            labels = frame["label"].to_numpy(dtype=np.float64)
            labels = labels[np.isfinite(labels)]
            for value in LABEL_VALUES:
                n = int(np.count_nonzero(labels == value))
                if n:
                    profile.label_counts[str(value)] = n
        if name:
            profile.files.append(name)
        return profile

    def add(self, other: IntensityProfile) -> None:
        if other.bins != self.bins:
            raise ValueError(f"cannot add a {other.bins}-bin profile to a {self.bins}-bin one")
        self.intensity_counts = [
            a + b for a, b in zip(self.intensity_counts, other.intensity_counts, strict=True)
        ]
        for k, n in other.label_counts.items():
            self.label_counts[k] = self.label_counts.get(k, 0) + n
        self.records += other.records
        self.files.extend(other.files)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["positive_fraction"] = self.positive_fraction
        return d


def load_reference(reports: Path) -> IntensityProfile | None:
    """The stored reference profile, or None before any data was validated."""
    import json

    path = reports / REFERENCE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("positive_fraction", None)
    profile = IntensityProfile(**data)
    return profile if profile.records else None


def save_reference(reports: Path, profile: IntensityProfile) -> Path:
    profile.updated_at = datetime.now(UTC).isoformat()
    return write_json_atomic(reports / REFERENCE_FILE, profile.to_dict())
