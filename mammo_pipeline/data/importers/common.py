"""What every importer shares: its errors, the label rule, seeded stable randomness, and the
log of decisions (skipped rows, downscaled lesions, notes) that becomes the import report."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mammo_pipeline.data.schema import TILE_MM_PER_PX
from mammo_pipeline.errors import DataError, MammoError

Split = Literal["train", "test"]
LesionKind = Literal["calcification", "mass"]
Warn = Callable[[str], None]

#: The contract's physical pixel size (a 299-px tile covers 29.9 mm): the same object as
#: ``schema.TILE_MM_PER_PX``, defined once in ``imaging.preprocess``; an alias for the
#: importer modules that import it by this name.
TARGET_MM_PER_PX = TILE_MM_PER_PX


class ImportFailedError(MammoError):
    """Nothing could be imported (every row skipped); nothing was written."""


class StrictImportError(MammoError):
    """``strict`` was asked for and a row had to be skipped; nothing was written."""


class CsvFormatError(DataError):
    """A description CSV / info file that does not have the documented columns."""


class OutputExistsError(DataError):
    """An output file already exists and overwriting was not asked for."""


def lesion_label(kind: LesionKind, malignant: bool) -> int:
    """The contract's 5-class label: 1 benign calc., 2 benign mass, 3 malignant calc.,
    4 malignant mass."""
    if kind == "calcification":
        return 3 if malignant else 1
    if kind == "mass":
        return 4 if malignant else 2
    raise ValueError(f"unknown lesion kind {kind!r}")


def stable_unit(key: str, seed: int) -> float:
    """A number in [0, 1) that depends only on (seed, key): the same on every machine and
    run, and unchanged when other keys are added (used for patient-level splits)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def stable_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (seed, key), independent of the order images are processed in."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng([int.from_bytes(digest[i : i + 4], "big") for i in (0, 4, 8)])


@dataclass
class ImportLog:
    """Every decision an importer takes about its input, in the order taken.

    ``skip`` records a row that produced no tile and reports it through ``warn`` (one line,
    naming the file and row); with ``strict`` it raises :class:`StrictImportError` instead.
    ``missing`` records an input file a row names that is absent: a subset of a data set (a
    few films of a large one) is normal, so those are not warned one by one but counted, and
    :meth:`summary_warnings` gives one line for all of them (the list is in the report).
    """

    warn: Warn | None = None
    strict: bool = False
    skipped: list[dict[str, Any]] = field(default_factory=list)
    downscaled: list[dict[str, Any]] = field(default_factory=list)
    excluded_patients: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)

    def skip(self, file: Path | str, row: int | None, reason: str, *, quiet: bool = False) -> None:
        where = f"{file}" if row is None else f"{file} row {row}"
        message = f"{where}: skipped: {reason}"
        if self.strict:
            raise StrictImportError(f"{message} (strict mode: nothing was written)")
        self.skipped.append({"file": str(file), "row": row, "reason": reason})
        if self.warn is not None and not quiet:
            self.warn(message)

    def missing(self, file: Path | str, row: int | None, reason: str, path: Path | str) -> None:
        """A row whose input file (``path``) is absent: skipped, listed, summarised once."""
        self.skip(file, row, reason, quiet=True)
        if str(path) not in self.missing_files:
            self.missing_files.append(str(path))

    def summary_warnings(self) -> list[str]:
        """One line for all absent input files (none when every file was there)."""
        if not self.missing_files:
            return []
        n = len(self.missing_files)
        shown = ", ".join(Path(p).name for p in self.missing_files[:3])
        more = f" and {n - 3} more" if n > 3 else ""
        return [
            f"{n} input file(s) named by the rows are absent ({shown}{more}); their rows are "
            "skipped; the list is in the import report under 'missing_files'"
        ]

    def note(self, kind: str, message: str, *, show: bool = False, **details: Any) -> None:
        self.notes.append({"kind": kind, "message": message, **details})
        if show and self.warn is not None:
            self.warn(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "downscaled_lesions": self.downscaled,
            "excluded_patients": self.excluded_patients,
            "notes": self.notes,
            "missing_files": self.missing_files,
        }
