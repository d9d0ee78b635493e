"""Whole-mammogram analysis: score every breast tile at the training scale, aggregate, locate.

The model was trained on 299 x 299 tiles at 0.1 mm per pixel cut by the importers from films
prepared by :func:`mammo_pipeline.imaging.preprocess.prepare_film`; a film to analyse goes
through that same function (any numeric array of raw intensities: 8/16-bit, float, DICOM
values), is cut into overlapping windows on a symmetric grid inside the film, keeping the
windows with at least the normal training tiles' breast coverage
(:mod:`~mammo_pipeline.analysis.tiling`), each window is turned into the model input
exactly as in training (:func:`~mammo_pipeline.data.preprocess.prepare_image`) and scored
by the caller's ``predict_batch`` a batch at a time. The image-level score is the largest
tile probability (named in the answer as ``aggregation``); the top regions are the
highest-scoring windows after non-maximum suppression, in the ORIGINAL image's pixel
coordinates. A NaN or infinite probability is an error, never a negative.

This module takes arrays, not files: decoding (DICOM, PNG, PGM) and the pixel spacing are
the caller's business; the answer records where the spacing came from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from mammo_pipeline.analysis.bounds import check_film_bounds
from mammo_pipeline.analysis.errors import (
    AnalysisInputError,
    AnalysisTimeError,
    ModelOutputError,
    NoBreastTissueError,
    NonFiniteScoreError,
)
from mammo_pipeline.analysis.tiling import TilePlan, iter_tile_batches, plan_tiles
from mammo_pipeline.data.preprocess import prepare_image
from mammo_pipeline.imaging.preprocess import (
    MAX_PREPARED_PIXELS,
    MIN_BREAST_FRACTION,
    TILE_MM_PER_PX,
    TILE_SIZE,
    Box,
    PreparedFilm,
    prepare_film,
)

SpacingSource = Literal["dicom", "form", "default"]
PredictBatch = Callable[[np.ndarray], Any]

#: Pixel spacing assumed when the caller knows none: the training scale (no resampling).
DEFAULT_PIXEL_SPACING_MM = TILE_MM_PER_PX
#: How the tile probabilities become the image-level score.
AGGREGATION = "max_tile_probability"
#: Plausible pixel spacings of a mammogram (mm per pixel).
SPACING_RANGE_MM = (0.005, 2.0)


@dataclass(frozen=True)
class Region:
    """One of the top-scoring windows, in the original image's pixel coordinates."""

    rank: int
    box: Box
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, **self.box.to_dict(), "probability": self.probability}


@dataclass(frozen=True)
class TileGrid:
    """Tile probabilities on the window grid: window (row, col) covers the original pixels
    ``y0[row]:y1[row], x0[col]:x1[col]``; NaN marks a window that was not scored (too
    little breast in it)."""

    y0: tuple[int, ...]
    y1: tuple[int, ...]
    x0: tuple[int, ...]
    x1: tuple[int, ...]
    probabilities: np.ndarray  # (rows, cols) float64

    def box(self, row: int, col: int) -> Box:
        return Box(self.x0[col], self.y0[row], self.x1[col], self.y1[row])

    def scored(self) -> list[tuple[Box, float]]:
        """(box, probability) of every scored window, row-major."""
        rows, cols = np.nonzero(np.isfinite(self.probabilities))
        return [
            (self.box(int(r), int(c)), float(self.probabilities[r, c]))
            for r, c in zip(rows, cols, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        probs = [
            [float(p) if math.isfinite(p) else None for p in row]
            for row in self.probabilities.tolist()
        ]
        return {
            "y0": list(self.y0),
            "y1": list(self.y1),
            "x0": list(self.x0),
            "x1": list(self.x1),
            "probabilities": probs,
        }


@dataclass(frozen=True)
class AnalysisResult:
    """The answer of :func:`analyze`; ``to_dict()`` is JSON-safe."""

    score: float
    label: Literal["positive", "negative"]
    threshold: float
    regions: tuple[Region, ...]
    tiles_scored: int
    windows_total: int
    image_height: int
    image_width: int
    pixel_spacing_mm: float
    spacing_source: SpacingSource
    target_mm_per_px: float
    tile_size_px: int  # at the training scale
    stride_px: int  # at the training scale
    min_breast_fraction: float
    breast_fraction: float
    model_image_size: int
    grid: TileGrid
    aggregation: str = AGGREGATION
    #: input intensities mapped to 0 and 255 (the breast's percentiles), for pictures
    intensity_window: tuple[float, float] | None = None

    @property
    def tile_size_mm(self) -> float:
        return self.tile_size_px * self.target_mm_per_px

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "aggregation": self.aggregation,
            "label": self.label,
            "threshold": self.threshold,
            "regions": [r.to_dict() for r in self.regions],
            "tiles_scored": self.tiles_scored,
            "windows_total": self.windows_total,
            "image": {"height": self.image_height, "width": self.image_width},
            "scale": {
                "pixel_spacing_mm": self.pixel_spacing_mm,
                "spacing_source": self.spacing_source,
                "target_mm_per_px": self.target_mm_per_px,
            },
            "tiling": {
                "tile_size_px": self.tile_size_px,
                "tile_size_mm": round(self.tile_size_mm, 6),
                "stride_px": self.stride_px,
                "min_breast_fraction": self.min_breast_fraction,
                "breast_fraction": self.breast_fraction,
                "model_image_size": self.model_image_size,
            },
            "grid": self.grid.to_dict(),
            "intensity_window": (
                None if self.intensity_window is None else list(self.intensity_window)
            ),
        }


def resolve_spacing(
    pixel_spacing_mm: float | None,
    spacing_source: SpacingSource | None,
    default_mm: float = DEFAULT_PIXEL_SPACING_MM,
) -> tuple[float, SpacingSource]:
    """The spacing to use and where it came from; a given spacing without a source counts
    as a form field, no spacing at all as the documented default."""
    if pixel_spacing_mm is None:
        if spacing_source not in (None, "default"):
            raise AnalysisInputError(f"spacing_source {spacing_source!r} given without a spacing")
        spacing, source = default_mm, "default"
    else:
        spacing, source = pixel_spacing_mm, spacing_source or "form"
    if source not in ("dicom", "form", "default"):
        raise AnalysisInputError(f"spacing_source must be dicom, form or default, got {source!r}")
    lo, hi = SPACING_RANGE_MM
    try:
        spacing = float(spacing)
    except (TypeError, ValueError) as exc:
        raise AnalysisInputError(f"pixel spacing {spacing!r} is not a number") from exc
    if not (math.isfinite(spacing) and lo <= spacing <= hi):
        raise AnalysisInputError(
            f"pixel spacing {spacing} mm/px ({source}) is outside the plausible range "
            f"{lo}..{hi} mm/px"
        )
    return spacing, source  # type: ignore[return-value]


def _check_arguments(
    threshold: float, image_size: int, top_k: int, target_mm_per_px: float, nms_iou: float
) -> None:
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise AnalysisInputError(f"threshold must be within 0..1, got {threshold}")
    if image_size < 1:
        raise AnalysisInputError(f"image_size must be >= 1, got {image_size}")
    if top_k < 1:
        raise AnalysisInputError(f"top_k must be >= 1, got {top_k}")
    if not (math.isfinite(target_mm_per_px) and 0.01 <= target_mm_per_px <= 1.0):
        raise AnalysisInputError(f"target_mm_per_px must be within 0.01..1, got {target_mm_per_px}")
    if not 0.0 <= nms_iou < 1.0:
        raise AnalysisInputError(f"nms_iou must be within [0, 1), got {nms_iou}")


def _prepare(
    pixels: np.ndarray, spacing: float, source: str, target: float, max_pixels: int
) -> PreparedFilm:
    try:
        return prepare_film(
            np.asarray(pixels),
            spacing_mm=spacing,
            spacing_source=source,
            target_mm=target,
            max_pixels=max_pixels,
        )
    except ValueError as exc:
        raise AnalysisInputError(f"image cannot be analysed: {exc}") from exc


def check_probabilities(
    raw: Any, cells: tuple[tuple[int, int], ...], plan: TilePlan, done: int
) -> np.ndarray:
    """The model's answer for one batch as N float64 probabilities, or an error naming the
    first bad tile by its box in the original image."""
    try:
        probs = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ModelOutputError(
            f"predict_batch returned something that is not numbers: {exc}"
        ) from exc
    if probs.shape[0] != len(cells):
        raise ModelOutputError(
            f"predict_batch returned {probs.shape[0]} values for {len(cells)} tiles"
        )
    bad = np.flatnonzero(~np.isfinite(probs))
    if bad.size:
        i = int(bad[0])
        box = plan.box(*cells[i]).to_dict()
        raise NonFiniteScoreError(
            f"the model returned {probs[i]} for tile {done + i + 1} at {box} "
            f"({bad.size} non-finite in this batch); a missing score is never read as negative"
        )
    out = np.flatnonzero((probs < 0.0) | (probs > 1.0))
    if out.size:
        i = int(out[0])
        raise ModelOutputError(
            f"the model returned {probs[i]} for tile {done + i + 1} at "
            f"{plan.box(*cells[i]).to_dict()}: a probability must be within 0..1"
        )
    return probs


def _check_time(started: float, budget_s: float | None, done: int, total: int, stride: int) -> None:
    if budget_s is None or time.monotonic() - started <= budget_s:
        return
    raise AnalysisTimeError(
        f"analysis stopped after {time.monotonic() - started:.1f} s, over its time budget of "
        f"{budget_s:g} s (MAMMO_ANALYSIS_TIME_BUDGET_S), with {done} of {total} windows "
        f"scored at a stride of {stride} px: use a larger stride_fraction or a smaller film"
    )


def top_regions(grid: TileGrid, top_k: int, nms_iou: float) -> tuple[Region, ...]:
    """The ``top_k`` highest-probability windows, greedily skipping any window whose IoU
    with an already chosen one exceeds ``nms_iou`` (so the regions are distinct places)."""
    scored = grid.scored()
    order = sorted(range(len(scored)), key=lambda i: -scored[i][1])  # stable: ties row-major
    chosen: list[Region] = []
    for i in order:
        box, p = scored[i]
        if all(box.iou(r.box) <= nms_iou for r in chosen):
            chosen.append(Region(rank=len(chosen) + 1, box=box, probability=p))
            if len(chosen) == top_k:
                break
    return tuple(chosen)


def analyze(
    pixels: np.ndarray,
    *,
    predict_batch: PredictBatch,
    image_size: int,
    threshold: float,
    pixel_spacing_mm: float | None = None,
    spacing_source: SpacingSource | None = None,
    target_mm_per_px: float = TILE_MM_PER_PX,
    stride_fraction: float = 0.5,
    top_k: int = 5,
    batch_size: int = 32,
    min_breast_fraction: float = MIN_BREAST_FRACTION,
    nms_iou: float = 0.1,
    default_spacing_mm: float = DEFAULT_PIXEL_SPACING_MM,
    progress: bool = False,
    max_pixels: int = MAX_PREPARED_PIXELS,
    max_windows: int | None = None,
    time_budget_s: float | None = None,
) -> AnalysisResult:
    """Score a whole mammogram tile by tile.

    ``pixels``: 2-D (or H x W x 1/3/4) numeric array of raw intensities, larger = denser
    (any bit depth: it goes through :func:`~mammo_pipeline.imaging.preprocess.prepare_film`).
    ``predict_batch``: N x image_size x image_size x 1 float32 (0..255) -> N probabilities.
    ``pixel_spacing_mm``: mm per pixel of ``pixels`` with its ``spacing_source`` ("dicom"
    or "form"); None uses ``default_spacing_mm`` ("default").
    Raises :class:`AnalysisInputError`, :class:`NoBreastTissueError`,
    :class:`NonFiniteScoreError` or :class:`ModelOutputError` (all MammoError).
    Bounds (:mod:`~mammo_pipeline.analysis.bounds`), checked before resampling: the film at
    the training scale at most ``max_pixels`` (:class:`FilmTooLargeError`), at most
    ``max_windows`` windows (:class:`TooManyWindowsError`); scoring stops between two
    batches once ``time_budget_s`` has passed (:class:`AnalysisTimeError`).
    """
    started = time.monotonic()
    _check_arguments(threshold, image_size, top_k, target_mm_per_px, nms_iou)
    spacing, source = resolve_spacing(pixel_spacing_mm, spacing_source, default_spacing_mm)
    arr = np.asarray(pixels)
    if arr.ndim >= 2:
        check_film_bounds(
            int(arr.shape[1]),
            int(arr.shape[0]),
            spacing,
            stride_fraction,
            max_pixels=max_pixels,
            max_windows=max_windows if max_windows is not None else 1 << 62,
            spacing_source=source,
            target_mm=target_mm_per_px,
        )
    prepared = _prepare(arr, spacing, source, target_mm_per_px, max_pixels)
    plan = plan_tiles(
        prepared,
        tile=TILE_SIZE,
        stride_fraction=stride_fraction,
        min_breast_fraction=min_breast_fraction,
    )
    if not plan.kept:
        raise NoBreastTissueError(
            f"no {TILE_SIZE}-px window at {target_mm_per_px} mm/px has at least "
            f"{min_breast_fraction:.0%} breast tissue (breast mask covers "
            f"{plan.breast_fraction():.1%} of the image): nothing to score"
        )
    probabilities = np.full(plan.coverage.shape, np.nan, dtype=np.float64)
    done = 0
    with tqdm(
        total=len(plan.kept), desc="analyze", unit="tile", disable=not progress, leave=False
    ) as bar:
        for cells, tiles in iter_tile_batches(plan, batch_size):
            _check_time(started, time_budget_s, done, len(plan.kept), plan.stride)
            x = np.asarray(prepare_image(tiles, image_size), dtype=np.float32)
            probs = check_probabilities(predict_batch(x), cells, plan, done)
            for (r, c), p in zip(cells, probs, strict=True):
                probabilities[r, c] = p
            done += len(cells)
            bar.update(len(cells))

    spans_y = [plan.span_y(r) for r in range(len(plan.ys))]
    spans_x = [plan.span_x(c) for c in range(len(plan.xs))]
    grid = TileGrid(
        y0=tuple(s[0] for s in spans_y),
        y1=tuple(s[1] for s in spans_y),
        x0=tuple(s[0] for s in spans_x),
        x1=tuple(s[1] for s in spans_x),
        probabilities=probabilities,
    )
    score = float(np.nanmax(probabilities))
    return AnalysisResult(
        score=score,
        label="positive" if score >= threshold else "negative",
        threshold=float(threshold),
        regions=top_regions(grid, top_k, nms_iou),
        tiles_scored=done,
        windows_total=int(probabilities.size),
        image_height=prepared.original_shape[0],
        image_width=prepared.original_shape[1],
        pixel_spacing_mm=spacing,
        spacing_source=source,
        target_mm_per_px=float(target_mm_per_px),
        tile_size_px=plan.tile,
        stride_px=plan.stride,
        min_breast_fraction=float(min_breast_fraction),
        breast_fraction=plan.breast_fraction(),
        model_image_size=int(image_size),
        grid=grid,
        intensity_window=prepared.window,
    )
