"""Cutting contract tiles out of a whole mammogram at the contract's physical scale.

An image is first *prepared* once by the project's one preprocessing path
(:func:`mammo_pipeline.imaging.preprocess.prepare_film`, the same that ``/analyze`` uses):
resampled to 0.1 mm per pixel, its breast segmented and its intensities windowed to 8 bits
from the breast's percentiles (one window per image, so tiles of one image share a scale).
Tiles are cut by the same function that cuts the windows ``/analyze`` scores
(:func:`~mammo_pipeline.imaging.preprocess.cut_window`). Then:

- a **lesion tile** is the 299 x 299 window centred on the lesion's bounding box. A lesion
  whose box is larger than the tile (29.9 mm) is cut from a larger window (the box plus a
  margin) and downscaled to 299 px; the factor is returned so it can be recorded. At the
  image border the window is *not* shifted: the part outside the image is filled with 0
  (black, the film background after windowing), so the lesion always sits at the centre.
- a **normal tile** is a window lying wholly inside the image, with at least
  :data:`~mammo_pipeline.imaging.preprocess.MIN_BREAST_FRACTION` of breast (the rule
  ``/analyze`` scores windows by), that overlaps no lesion box of that image and no other
  normal tile; positions are drawn by a seeded generator among all the windows that qualify.

Boxes (:class:`~mammo_pipeline.imaging.preprocess.Box`, the project's one box) are in *edge*
coordinates of the prepared image: pixel ``i`` covers ``[i, i + 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mammo_pipeline.data.importers.common import TARGET_MM_PER_PX
from mammo_pipeline.data.schema import SOURCE_SIZE
from mammo_pipeline.imaging import MedicalImage
from mammo_pipeline.imaging.preprocess import (
    MIN_BREAST_FRACTION,
    Box,
    PreparedFilm,
    cut_window,
    extract_tile,
    prepare_film,
)

__all__ = ["Box", "LesionTile", "PreparedImage", "lesion_tile", "normal_tiles", "prepare"]

#: The importers' name for a prepared film (the one type, from ``imaging.preprocess``).
PreparedImage = PreparedFilm


@dataclass(frozen=True)
class LesionTile:
    pixels: np.ndarray  # 299 x 299 uint8
    downscale: float  # window side / tile side; 1.0 when the lesion fits
    lesion_mm: float  # longest side of the lesion's box
    padded: bool  # part of the window lay outside the image (filled with 0)


def prepare(
    image: MedicalImage,
    *,
    default_spacing_mm: float | None,
    target_mm: float = TARGET_MM_PER_PX,
) -> PreparedImage:
    """:func:`~mammo_pipeline.imaging.preprocess.prepare_film` of a read film.

    The image's own spacing wins; ``default_spacing_mm`` is used when it has none (and
    ``spacing_from_file`` is False). ValueError when neither is known.
    """
    return prepare_film(image, default_spacing_mm=default_spacing_mm, target_mm=target_mm)


def lesion_tile(
    prepared: PreparedImage,
    box: Box,
    *,
    tile: int = SOURCE_SIZE,
    margin: float = 0.1,
    target_mm: float = TARGET_MM_PER_PX,
) -> LesionTile:
    """The tile centred on ``box``; a box longer than ``tile`` px is cut with ``margin``
    (a fraction of its side) of context around it and downscaled to fit."""
    side = tile
    if box.max_side > tile:
        side = int(math.ceil(box.max_side * (1.0 + margin)))
    center = box.center_index
    pixels = extract_tile(prepared.pixels, center, side, tile, fill=0)
    h, w = prepared.shape
    half = (side - 1) / 2
    padded = (
        center[0] - half < -0.5
        or center[1] - half < -0.5
        or center[0] + half > h - 0.5
        or center[1] + half > w - 0.5
    )
    return LesionTile(pixels, side / tile, box.max_side * target_mm, bool(padded))


def _block_invalid(valid: np.ndarray, box: Box, tile: int, step: int) -> None:
    """Mark every window overlapping ``box`` as invalid; ``valid[i, j]`` is the window whose
    top-left corner is pixel ``(i * step, j * step)``."""
    # A window starting at r covers [r, r + tile): it overlaps when r < bottom and r + tile > top.
    r_min = math.ceil((math.floor(box.top - tile) + 1) / step)
    r_max = math.floor((math.ceil(box.bottom) - 1) / step)
    c_min = math.ceil((math.floor(box.left - tile) + 1) / step)
    c_max = math.floor((math.ceil(box.right) - 1) / step)
    r_min, c_min = max(r_min, 0), max(c_min, 0)
    r_max, c_max = min(r_max, valid.shape[0] - 1), min(c_max, valid.shape[1] - 1)
    if r_min <= r_max and c_min <= c_max:
        valid[r_min : r_max + 1, c_min : c_max + 1] = False


def normal_tiles(
    prepared: PreparedImage,
    avoid: Sequence[Box],
    count: int,
    rng: np.random.Generator,
    *,
    tile: int = SOURCE_SIZE,
    min_breast_fraction: float = MIN_BREAST_FRACTION,
    step: int = 4,
) -> list[tuple[np.ndarray, Box]]:
    """Up to ``count`` tiles of tissue away from every box in ``avoid`` (may return fewer
    when the breast has no more room), each with its box.

    Candidate windows start on a ``step``-pixel grid (0.4 mm at the contract's scale); the
    breast fraction of a window is measured on ``step`` x ``step`` blocks lying inside it.
    Overlap with ``avoid`` is decided exactly.
    """
    h, w = prepared.shape
    if count <= 0 or h < tile or w < tile:
        return []
    # Breast pixels per step x step block, then a summed-area table over the blocks.
    hb, wb = h // step, w // step
    blocks = (
        prepared.breast[: hb * step, : wb * step]
        .reshape(hb, step, wb, step)
        .sum(axis=(1, 3), dtype=np.int32)
    )
    sat = np.zeros((hb + 1, wb + 1), dtype=np.int64)
    sat[1:, 1:] = blocks.cumsum(axis=0).cumsum(axis=1)
    k = tile // step  # whole blocks inside a window starting on the grid
    rows, cols = (h - tile) // step + 1, (w - tile) // step + 1
    area = (
        sat[k : k + rows, k : k + cols]
        - sat[:rows, k : k + cols]
        - sat[k : k + rows, :cols]
        + sat[:rows, :cols]
    )
    valid = area >= min_breast_fraction * (k * step) ** 2
    for box in avoid:
        _block_invalid(valid, box, tile, step)
    out: list[tuple[np.ndarray, Box]] = []
    for _ in range(count):
        candidates = np.flatnonzero(valid)
        if candidates.size == 0:
            break
        i, j = divmod(int(candidates[rng.integers(candidates.size)]), valid.shape[1])
        r, c = i * step, j * step
        box = Box(x0=c, y0=r, x1=c + tile, y1=r + tile)
        out.append((cut_window(prepared, r, c, tile), box))
        _block_invalid(valid, box, tile, step)
    return out
