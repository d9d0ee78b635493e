"""The part of an import that is the same for every source: turning one prepared image with
its located lesions into lesion and normal tiles, and finishing the import (report, counts).

Rule for normal tiles: they are cut only from an image all of whose lesions were located. If
any lesion row of the image was skipped (missing ROI file, no coordinates, ...), its
position is unknown and a "normal" tile could contain it, so that image gives no normals.

Rule for lesion tiles: a lesion whose centre lies on the film background (no breast tissue
within :data:`BREAST_TOLERANCE_MM` of it, by the shared breast mask) is a mislabelled row, not
a lesion: it is skipped with that reason and never written (an all-black "lesion" tile would
teach the model that background is a finding, and validation would quarantine the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mammo_pipeline.data.importers.common import (
    TARGET_MM_PER_PX,
    ImportFailedError,
    ImportLog,
    Split,
)
from mammo_pipeline.data.importers.films import FilmKeeper, FilmRole
from mammo_pipeline.data.importers.output import ImportOutputs, ImportWriter
from mammo_pipeline.data.importers.tiling import Box, PreparedImage, lesion_tile, normal_tiles
from mammo_pipeline.data.schema import LABEL_NAMES, SOURCE_SIZE
from mammo_pipeline.imaging.preprocess import MIN_BREAST_FRACTION

#: Every report and summary says this: imported tiles are real patient data.
REAL_TAG = "REAL"
#: A lesion centre counts as on the breast when breast tissue lies within this distance.
BREAST_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class Lesion:
    """A located lesion of one image: its box in prepared-image coordinates, its label and
    where it came from (file, row, ...) for the report."""

    box: Box
    label: int
    provenance: dict[str, Any] = field(default_factory=dict)
    #: (file, row) of the row that named the lesion, for the skip reasons.
    source: tuple[str, int | None] = ("?", None)
    #: (top, left, bottom, right) in the ORIGINAL image's edge coordinates (for film sets).
    original: tuple[float, float, float, float] | None = None


def on_breast(prepared: PreparedImage, box: Box) -> bool:
    """Whether breast tissue lies within :data:`BREAST_TOLERANCE_MM` of the box's centre."""
    r, c = (int(round(v)) for v in box.center_index)
    h, w = prepared.shape
    if not (0 <= r < h and 0 <= c < w):
        return False
    k = max(0, int(round(BREAST_TOLERANCE_MM / TARGET_MM_PER_PX)))
    return bool(prepared.breast[max(r - k, 0) : r + k + 1, max(c - k, 0) : c + k + 1].any())


@dataclass(frozen=True)
class ImportResult:
    outputs: ImportOutputs
    log: ImportLog
    report: dict[str, Any]
    #: The held-out whole films kept as a film set (path, counts, digest), or None.
    film_set: dict[str, Any] | None = None

    def summary_lines(self) -> list[str]:
        """Human-readable counts per split and label, marked REAL."""
        source = self.report.get("source", "?")
        lines = []
        for split, counts in self.outputs.counts.items():
            total = sum(counts.values())
            parts = ", ".join(f"{k}:{LABEL_NAMES[k]}={v}" for k, v in counts.items())
            lines.append(f"{REAL_TAG} {source} {split}: {total} tiles ({parts})")
        lines.append(
            f"{len(self.log.skipped)} row(s) skipped, {len(self.log.downscaled)} lesion(s) "
            f"downscaled to fit a tile, {len(self.log.excluded_patients)} patient(s) excluded"
        )
        if self.film_set:
            roles = ", ".join(f"{k} {v}" for k, v in self.film_set["by_role"].items())
            lines.append(
                f"{REAL_TAG} {source} whole films kept for film-level evaluation: "
                f"{self.film_set['films']} ({roles}) in {self.film_set['path']}"
            )
        return lines


def lesions_on_breast(
    log: ImportLog, prepared: PreparedImage, image_ref: str, lesions: list[Lesion]
) -> list[Lesion]:
    """The lesions centred on breast tissue; each other one is skipped with the reason."""
    placed = []
    for lesion in lesions:
        if on_breast(prepared, lesion.box):
            placed.append(lesion)
            continue
        (r, c) = (round(v, 1) for v in lesion.box.center_index)
        log.skip(
            *lesion.source,
            f"{image_ref}: lesion centre (row {r}, col {c} at {TARGET_MM_PER_PX} mm/px) lies "
            "on the film background, not on breast tissue: no tile written",
        )
    return placed


def keep_film(
    films: FilmKeeper,
    prepared: PreparedImage,
    pixels: np.ndarray,
    *,
    image_ref: str,
    patient: str,
    role: FilmRole,
    lesions: list[Lesion],
    complete: bool,
) -> None:
    """Keep a held-out film in the film set when every lesion of it has a known place."""
    if not films.active:
        return
    if not complete or any(lesion.original is None for lesion in lesions):
        films.leave_out(image_ref, "a lesion of it has no known place on breast tissue")
        return
    boxes = [
        (lo[1], lo[0], lo[3], lo[2], lesion.label) for lesion in lesions if (lo := lesion.original)
    ]
    films.keep(image_ref, pixels, prepared.spacing_mm, boxes, role=role, group=patient)


def emit_image_tiles(
    writer: ImportWriter,
    log: ImportLog,
    prepared: PreparedImage,
    *,
    split: Split,
    patient: str,
    image_ref: str,
    lesions: list[Lesion],
    all_lesions_located: bool,
    normals_per_image: int,
    rng: np.random.Generator,
    margin: float = 0.1,
    min_breast_fraction: float = MIN_BREAST_FRACTION,
) -> list[Lesion]:
    """Write one lesion tile per lesion centred on breast tissue and up to
    ``normals_per_image`` normal tiles; returns the lesions that got a tile."""
    base = {
        "patient": patient,
        "image": image_ref,
        "pixel_spacing_mm": list(prepared.spacing_mm),
        "spacing_from_file": prepared.spacing_from_file,
    }
    placed = lesions_on_breast(log, prepared, image_ref, lesions)
    for lesion in placed:
        tile = lesion_tile(prepared, lesion.box, margin=margin)
        details = {
            **base,
            **lesion.provenance,
            "kind": "lesion",
            "box_px": lesion.box.to_dict(),
            "lesion_mm": round(tile.lesion_mm, 2),
            "downscale": round(tile.downscale, 4),
            "padded_at_border": tile.padded,
        }
        writer.add(tile.pixels, lesion.label, split, **details)
        if tile.downscale > 1.0:
            log.downscaled.append(
                {
                    "split": split,
                    **{k: details[k] for k in ("patient", "image", "lesion_mm", "downscale")},
                    **lesion.provenance,
                }
            )
    if normals_per_image <= 0:
        return placed
    if not all_lesions_located:
        log.note(
            "no_normals",
            f"{image_ref}: no normal tiles: a lesion of this image could not be located",
            image=image_ref,
        )
        return placed
    normals = normal_tiles(
        prepared,
        [lesion.box for lesion in lesions],
        normals_per_image,
        rng,
        min_breast_fraction=min_breast_fraction,
    )
    for pixels, box in normals:
        writer.add(pixels, 0, split, **base, kind="normal", box_px=box.to_dict())
    if len(normals) < normals_per_image:
        log.note(
            "normal_shortfall",
            f"{image_ref}: {len(normals)} of {normals_per_image} normal tiles fit on breast "
            "tissue away from the lesions",
            image=image_ref,
            found=len(normals),
        )
    return placed


def import_image(
    writer: ImportWriter,
    films: FilmKeeper,
    log: ImportLog,
    prepared: PreparedImage,
    pixels: np.ndarray,
    *,
    role: FilmRole | None,
    split: Split,
    patient: str,
    image_ref: str,
    lesions: list[Lesion],
    all_lesions_located: bool,
    normals_per_image: int,
    rng: np.random.Generator,
    margin: float = 0.1,
    min_breast_fraction: float = MIN_BREAST_FRACTION,
) -> str:
    """One image of an import. A validation patient's film only joins the film set (held
    out of training: no tile of it is written); any other image gets its tiles, and a test
    patient's film joins the film set too. Returns the report's patient bucket."""
    if role == "validation":
        placed = lesions_on_breast(log, prepared, image_ref, lesions)
    else:
        placed = emit_image_tiles(
            writer,
            log,
            prepared,
            split=split,
            patient=patient,
            image_ref=image_ref,
            lesions=lesions,
            all_lesions_located=all_lesions_located,
            normals_per_image=normals_per_image,
            rng=rng,
            margin=margin,
            min_breast_fraction=min_breast_fraction,
        )
    if role is not None:
        complete = all_lesions_located and placed == lesions
        keep_film(films, prepared, pixels, image_ref=image_ref, patient=patient, role=role,
                  lesions=placed, complete=complete)  # fmt: skip
    return "validation_films" if role == "validation" else split


def report_header(source: str, imported_from: dict[str, str], parameters: dict) -> dict:
    """The fixed first part of every import report."""
    return {
        "data": REAL_TAG,
        "source": source,
        "imported_from": imported_from,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "tile": {
            "size_px": SOURCE_SIZE,
            "mm_per_px": TARGET_MM_PER_PX,
            "covers_mm": round(SOURCE_SIZE * TARGET_MM_PER_PX, 2),
            "border_rule": "window stays centred on the lesion; outside the image is 0",
        },
        "parameters": parameters,
    }


def finish(
    writer: ImportWriter,
    log: ImportLog,
    report: dict[str, Any],
    films: FilmKeeper | None = None,
) -> ImportResult:
    """Commit the writer (and the film set) unless nothing was imported (then raise,
    leaving nothing behind)."""
    if log.warn is not None:
        for line in log.summary_warnings():
            log.warn(line)
    if not writer.tiles:
        reasons = "; ".join(sorted({s["reason"].split(":")[0] for s in log.skipped})[:3])
        raise ImportFailedError(
            f"nothing could be imported from {report.get('source')}: "
            f"{len(log.skipped)} row(s) skipped"
            + (f" ({reasons})" if reasons else "")
            + "; see the warnings above"
        )
    film_set = films.close() if films is not None else None
    report = {**report, "film_set": film_set}
    try:
        outputs = writer.commit({**report, **log.to_dict()})
    except BaseException:
        if films is not None:
            films.remove()
        raise
    return ImportResult(outputs, log, writer.final_report, film_set)
