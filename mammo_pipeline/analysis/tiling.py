"""The windows ``/analyze`` scores over a prepared film, produced lazily a batch at a time.

The film is prepared by the project's one path
(:func:`mammo_pipeline.imaging.preprocess.prepare_film`: float intensities resampled to the
training scale, the breast mask, the 8-bit window), exactly as the importers prepare the
films they cut training tiles from. This module owns the choice of windows: the CENTRED grid
(:func:`~mammo_pipeline.imaging.preprocess.window_starts`, mirror-symmetric), which windows
are kept (breast coverage of the window's part inside the film at least
``min_breast_fraction``, by default the normal-tile rule
:data:`~mammo_pipeline.imaging.preprocess.MIN_BREAST_FRACTION`), the mapping of a window back
to the ORIGINAL image's pixel coordinates, and the uint8 tiles themselves, cut by
:func:`~mammo_pipeline.imaging.preprocess.cut_window` (the importer's cutter) only when a
batch is asked for, so memory stays bounded by the batch size, never by the number of tiles.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mammo_pipeline.analysis.errors import AnalysisInputError
from mammo_pipeline.imaging.preprocess import (
    MIN_BREAST_FRACTION,
    TILE_SIZE,
    Box,
    PreparedFilm,
    breast_coverage,
    cut_window,
    window_starts,
)


@dataclass(frozen=True)
class TilePlan:
    """The windows to score over one prepared film."""

    prepared: PreparedFilm
    tile: int
    stride: int  # requested; the windows of an axis are spread evenly, at most this apart
    ys: tuple[int, ...]  # window tops, training scale (negative only for a film < 1 tile)
    xs: tuple[int, ...]  # window lefts, training scale
    coverage: np.ndarray  # (len(ys), len(xs)) breast fraction of each window's in-film part
    kept: tuple[tuple[int, int], ...]  # (row, col) of the windows to score, row-major

    def span_y(self, row: int) -> tuple[int, int]:
        """Original-image rows [y0, y1) covered by window row ``row`` (clipped)."""
        return self.prepared.original_span(self.ys[row], self.tile, 0)

    def span_x(self, col: int) -> tuple[int, int]:
        """Original-image columns [x0, x1) covered by window column ``col`` (clipped)."""
        return self.prepared.original_span(self.xs[col], self.tile, 1)

    def box(self, row: int, col: int) -> Box:
        """The window in the ORIGINAL image's pixel coordinates."""
        (y0, y1), (x0, x1) = self.span_y(row), self.span_x(col)
        return Box(x0, y0, x1, y1)

    def breast_fraction(self) -> float:
        """Fraction of the film that is breast."""
        return self.prepared.breast_fraction()


def plan_tiles(
    prepared: PreparedFilm,
    *,
    tile: int = TILE_SIZE,
    stride_fraction: float = 0.5,
    min_breast_fraction: float = MIN_BREAST_FRACTION,
) -> TilePlan:
    """The symmetric window grid over ``prepared`` and the windows whose breast coverage is at
    least ``min_breast_fraction``."""
    if not 0.0 < stride_fraction <= 1.0:
        raise AnalysisInputError(f"stride_fraction must be within (0, 1], got {stride_fraction}")
    if not 0.0 < min_breast_fraction <= 1.0:
        raise AnalysisInputError(
            f"min_breast_fraction must be within (0, 1], got {min_breast_fraction}"
        )
    stride = max(1, round(tile * stride_fraction))
    h, w = prepared.shape
    ys, xs = window_starts(h, tile, stride), window_starts(w, tile, stride)
    coverage = np.array(
        [[breast_coverage(prepared, y, x, tile) for x in xs] for y in ys], dtype=np.float32
    )
    kept = tuple(
        (r, c)
        for r in range(len(ys))
        for c in range(len(xs))
        if coverage[r, c] >= min_breast_fraction
    )
    return TilePlan(prepared, tile, stride, ys, xs, coverage, kept)


def iter_tile_batches(
    plan: TilePlan, batch_size: int
) -> Iterator[tuple[tuple[tuple[int, int], ...], np.ndarray]]:
    """Yield ((row, col) of each window, uint8 N x tile x tile x 1 tiles), ``batch_size`` at
    a time; each batch is cut from the prepared film only when it is asked for."""
    if batch_size < 1:
        raise AnalysisInputError(f"batch_size must be >= 1, got {batch_size}")
    t = plan.tile
    for start in range(0, len(plan.kept), batch_size):
        cells = plan.kept[start : start + batch_size]
        batch = np.empty((len(cells), t, t, 1), dtype=np.uint8)
        for i, (r, c) in enumerate(cells):
            batch[i, :, :, 0] = cut_window(plan.prepared, plan.ys[r], plan.xs[c], t)
        yield cells, batch
