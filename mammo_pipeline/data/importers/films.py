"""Keeping held-out patients' whole films as a *film set* (:mod:`mammo_pipeline.data.film_set`).

Film-level evaluation (what ``/analyze`` answers: film ROC AUC, FROC, localisation) needs
whole films with their lesions' places, from patients the model never trained on. An import
keeps them beside the tile test split, under the same patient split:

- role ``test``: every film of a held-out (test) patient whose lesions were all located on
  breast tissue (a film with a lesion of unknown place cannot be scored for localisation,
  and calling it normal would be wrong: it is left out, with a note in the report);
- role ``validation``: with ``validation_films`` > 0, that share of the *training* patients
  (a stable hash of the patient, as for the test split) is held out of training entirely
  (no tile of theirs is written) and their films choose the film-level threshold. With 0 (the
  default) no patient is taken from training, and the threshold is derived from the tile
  threshold instead (see the film evaluation).

Films are stored at their own pixel size when it is 0.1 mm/px or coarser (MIAS: 0.2), and
resampled to the training scale (0.1 mm/px) when finer (CBIS-DDSM scans, about 0.05): the
analysis resamples to that scale anyway, and a full-resolution 16-bit CBIS-DDSM film costs
four times the disk. Lesion boxes are mapped to the stored pixels. The intensities are the
reader's (larger = denser); the writer rescales them linearly to 16 bits, which the
preprocessing (percentile window, Otsu mask) does not see.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mammo_pipeline.data.film_set import FilmSetWriter, is_film_set
from mammo_pipeline.data.importers.common import (
    TARGET_MM_PER_PX,
    ImportLog,
    OutputExistsError,
    stable_unit,
)
from mammo_pipeline.data.importers.output import ImportWriter
from mammo_pipeline.imaging.resample import resample_to_spacing

FilmRole = Literal["validation", "test"]
#: (x0, y0, x1, y1, label) in the original image's pixels, x1/y1 exclusive.
SourceBox = tuple[float, float, float, float, int]


def validation_patient(patient: str, seed: int, fraction: float) -> bool:
    """Whether a training patient is held out for validation films (stable across runs)."""
    return fraction > 0 and stable_unit(f"validation-films:{patient}", seed) < fraction


class FilmKeeper:
    """Collects the held-out films of one import; nothing appears until :meth:`close`."""

    def __init__(
        self, out_dir: Path | str | None, *, source: str, log: ImportLog, overwrite: bool
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log
        self._writer: FilmSetWriter | None = None
        if self.out_dir is not None:
            if not overwrite and (is_film_set(self.out_dir) or self.out_dir.is_file()):
                raise OutputExistsError(
                    self.out_dir, "already exists (pass overwrite to replace it)"
                )
            self._writer = FilmSetWriter(self.out_dir, source=source, synthetic=False)
        self.kept: dict[str, int] = {"validation": 0, "test": 0}

    @property
    def active(self) -> bool:
        return self._writer is not None

    def keep(
        self,
        film_id: str,
        pixels: np.ndarray,
        spacing_mm: tuple[float, float],
        lesions: Sequence[SourceBox],
        *,
        role: FilmRole,
        group: str,
    ) -> None:
        """Add one film (original pixels and spacing, lesion boxes in original pixels)."""
        if self._writer is None:
            return
        row_mm, col_mm = (float(v) for v in spacing_mm)
        arr = np.asarray(pixels)
        if row_mm == col_mm and row_mm >= TARGET_MM_PER_PX:
            stored, spacing, scale = arr, row_mm, (1.0, 1.0)
        else:  # finer than the training scale, or anisotropic: store at the training scale
            stored, scale = resample_to_spacing(arr, (row_mm, col_mm), TARGET_MM_PER_PX)
            spacing = TARGET_MM_PER_PX
        h, w = stored.shape
        boxes: list[tuple[int, int, int, int, int]] = []
        for x0, y0, x1, y1, label in lesions:
            bx0 = min(max(math.floor(x0 * scale[1]), 0), w - 1)
            by0 = min(max(math.floor(y0 * scale[0]), 0), h - 1)
            bx1 = min(max(math.ceil(x1 * scale[1]), bx0 + 1), w)
            by1 = min(max(math.ceil(y1 * scale[0]), by0 + 1), h)
            boxes.append((bx0, by0, bx1, by1, int(label)))
        self._writer.add(
            film_id, stored, pixel_spacing_mm=spacing, lesions=boxes, role=role, group=group
        )
        self.kept[role] += 1

    def leave_out(self, film_id: str, reason: str) -> None:
        """A held-out film that cannot be kept (a lesion without a known place)."""
        if self._writer is not None:
            self.log.note(
                "film_not_kept", f"{film_id}: whole film not kept: {reason}", film=film_id
            )

    def close(self) -> dict[str, Any] | None:
        """Move the film set into place; its summary for the report (None when inactive)."""
        if self._writer is None:
            return None
        manifest = self._writer.close()
        self._writer = None
        return {
            "path": str(self.out_dir),
            "films": len(manifest.films),
            "by_role": dict(self.kept),
            "digest": manifest.digest,
        }

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def remove(self) -> None:
        """Undo a closed set (the tiles' commit failed after it)."""
        if self.out_dir is not None and is_film_set(self.out_dir):
            shutil.rmtree(self.out_dir, ignore_errors=True)


@contextmanager
def keeper_guard(keeper: FilmKeeper) -> Iterator[FilmKeeper]:
    """Abort the keeper's staging when the import fails (a closed keeper is untouched)."""
    try:
        yield keeper
    finally:
        keeper.abort()


@contextmanager
def import_outputs(
    films_out: Path | str | None,
    *,
    source: str,
    log: ImportLog,
    name: str,
    out: Path,
    test_out: Path,
    report_file: Path,
    records_per_file: int,
    overwrite: bool,
) -> Iterator[tuple[FilmKeeper, ImportWriter]]:
    """The film keeper and the tile writer of one import, both undone on an error."""
    keeper = FilmKeeper(films_out, source=source, log=log, overwrite=overwrite)
    with (
        keeper_guard(keeper),
        ImportWriter(
            name, out, test_out, report_file, records_per_file=records_per_file, overwrite=overwrite
        ) as writer,
    ):
        yield keeper, writer
