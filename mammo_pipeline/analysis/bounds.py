"""Bounds of one whole-film analysis, checked from the film's size before any pixel moves.

The cost of :func:`mammo_pipeline.analysis.analyze` grows with the film at the training
scale (resampling, mask and window: about 13-16 bytes per pixel of the larger of the decoded
and the resampled film, measured in ``docs/serving-bounds.md``) and with the number of
windows laid over it (each window's breast coverage, then the model). Both follow from the
header's width x height, the pixel spacing and the stride alone, so a caller can refuse a
film before decoding it:

- :func:`resampled_shape`: rows x cols at the training scale; over ``max_pixels`` is a
  :class:`FilmTooLargeError` (413) naming the limit and the spacing;
- :func:`window_count`: the windows of the symmetric grid
  (:func:`~mammo_pipeline.imaging.preprocess.window_starts`, every window, kept or not);
  over ``max_windows`` is a :class:`TooManyWindowsError` (422) naming the limit, the stride
  and the smallest stride that fits.
"""

from __future__ import annotations

import math

from mammo_pipeline.analysis.errors import FilmTooLargeError, TooManyWindowsError
from mammo_pipeline.imaging.preprocess import TILE_MM_PER_PX, TILE_SIZE


def resampled_shape(
    width: int, height: int, spacing_mm: float, target_mm: float = TILE_MM_PER_PX
) -> tuple[int, int]:
    """(rows, cols) of a ``width`` x ``height`` film at ``target_mm`` per pixel (the rounding
    of :func:`~mammo_pipeline.imaging.preprocess.prepare_film`)."""
    return (
        max(1, round(height * spacing_mm / target_mm)),
        max(1, round(width * spacing_mm / target_mm)),
    )


def window_count(rows: int, cols: int, stride_fraction: float, tile: int = TILE_SIZE) -> int:
    """Windows of the grid over a ``rows`` x ``cols`` prepared film (arithmetic only)."""
    stride = max(1, round(tile * stride_fraction))
    return _axis(rows, tile, stride) * _axis(cols, tile, stride)


def _axis(length: int, tile: int, stride: int) -> int:
    """len(window_starts(length, tile, stride)), without building the list."""
    if length <= tile:
        return 1
    span = length - tile
    n = math.ceil(span / stride) + 1
    return n + 1 if span % 2 and n % 2 else n


def check_film_bounds(
    width: int,
    height: int,
    spacing_mm: float,
    stride_fraction: float,
    *,
    max_pixels: int,
    max_windows: int,
    spacing_source: str = "given",
    target_mm: float = TILE_MM_PER_PX,
) -> tuple[int, int, int]:
    """(rows, cols, windows) of the analysis, or the error naming the bound it breaks."""
    rows, cols = resampled_shape(width, height, spacing_mm, target_mm)
    if rows * cols > max_pixels:
        raise FilmTooLargeError(
            f"film of {width}x{height} px at {spacing_mm:g} mm/px ({spacing_source}) would be "
            f"{cols}x{rows} = {rows * cols} px at {target_mm:g} mm/px, over the limit of "
            f"{max_pixels} px (MAMMO_ANALYSIS_MAX_PIXELS): check the pixel spacing"
        )
    windows = window_count(rows, cols, stride_fraction)
    if windows > max_windows:
        fits = next(
            (f / 100 for f in range(5, 101) if window_count(rows, cols, f / 100) <= max_windows),
            None,
        )
        hint = (
            f"; stride_fraction {fits:g} or more fits"
            if fits is not None
            else "; no stride fits: send a smaller film"
        )
        raise TooManyWindowsError(
            f"stride_fraction {stride_fraction:g} ({max(1, round(TILE_SIZE * stride_fraction))} "
            f"px) lays {windows} windows over this film ({cols}x{rows} px at {target_mm:g} "
            f"mm/px), over the limit of {max_windows} windows per film "
            f"(MAMMO_ANALYSIS_MAX_WINDOWS){hint}"
        )
    return rows, cols, windows
