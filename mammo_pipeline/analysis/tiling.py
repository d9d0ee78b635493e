"""Sliding-window tiles at the training scale over the breast of a whole mammogram.

Owns: resampling the image to the training scale (the model saw 299-pixel tiles at about
0.1 mm per pixel), the window grid (a stride, with the last row/column of windows shifted
inside so the right and bottom edges are covered), which windows are kept (breast-mask
coverage), the mapping of a window back to the ORIGINAL image's pixel coordinates, and the
uint8 tiles themselves, produced lazily one batch at a time so memory stays bounded by the
batch size, never by the number of tiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mammo_pipeline.analysis.breast_mask import breast_mask
from mammo_pipeline.analysis.errors import AnalysisInputError
from mammo_pipeline.data.schema import SOURCE_SIZE, TILE_MM_PER_PX

#: Scale of the training tiles (mm per pixel).
TRAINING_MM_PER_PX = TILE_MM_PER_PX
#: Side of a training tile in pixels at the training scale.
TILE_SIZE = SOURCE_SIZE
#: Largest image, in pixels at the training scale, that is analysed (about 80 x 80 cm).
MAX_RESAMPLED_PIXELS = 64_000_000


@dataclass(frozen=True, slots=True)
class Box:
    """A pixel box; ``x1``/``y1`` exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(self.x1 - self.x0, 0) * max(self.y1 - self.y0, 0)

    def intersection(self, other: Box) -> int:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(w, 0) * max(h, 0)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def to_dict(self) -> dict[str, int]:
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1}


def resampled_shape(
    shape: tuple[int, int], pixel_spacing_mm: float, target_mm_per_px: float
) -> tuple[int, int]:
    """The image size at the training scale (each side at least 1 pixel)."""
    k = pixel_spacing_mm / target_mm_per_px
    return max(1, round(shape[0] * k)), max(1, round(shape[1] * k))


def resample(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 H x W image resized to ``shape`` (bilinear, antialiased when shrinking, as
    Pillow resizes); returned unchanged when the size already matches."""
    if gray.shape == shape:
        return gray
    img = Image.fromarray(np.ascontiguousarray(gray))
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def axis_origins(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Window starts along one axis: every ``stride`` pixels, plus a last window moved
    inside so the far edge is covered; a single window at 0 when the axis is shorter."""
    if length <= tile:
        return (0,)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return tuple(starts)


@dataclass(frozen=True)
class TilePlan:
    """The windows to score over one image, at the training scale."""

    image: np.ndarray  # uint8, padded with 0 (background) to at least one tile per side
    mask: np.ndarray  # bool, same shape as image
    original_shape: tuple[int, int]
    resampled_shape: tuple[int, int]  # before padding
    tile: int
    stride: int
    ys: tuple[int, ...]  # window tops, training scale
    xs: tuple[int, ...]  # window lefts, training scale
    coverage: np.ndarray  # (len(ys), len(xs)) breast fraction of each window's image part
    kept: tuple[tuple[int, int], ...]  # (row, col) of the windows to score, row-major

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per training-scale pixel, (y, x)."""
        return (
            self.original_shape[0] / self.resampled_shape[0],
            self.original_shape[1] / self.resampled_shape[1],
        )

    def span_y(self, row: int) -> tuple[int, int]:
        """Original-image rows [y0, y1) covered by window row ``row`` (clipped)."""
        return _span(self.ys[row], self.tile, self.scale[0], self.original_shape[0])

    def span_x(self, col: int) -> tuple[int, int]:
        """Original-image columns [x0, x1) covered by window column ``col`` (clipped)."""
        return _span(self.xs[col], self.tile, self.scale[1], self.original_shape[1])

    def box(self, row: int, col: int) -> Box:
        """The window in the ORIGINAL image's pixel coordinates."""
        (y0, y1), (x0, x1) = self.span_y(row), self.span_x(col)
        return Box(x0, y0, x1, y1)

    def breast_fraction(self) -> float:
        """Fraction of the (unpadded) image that is breast."""
        h, w = self.resampled_shape
        return float(self.mask[:h, :w].mean())


def _span(start: int, tile: int, scale: float, limit: int) -> tuple[int, int]:
    lo = min(max(math.floor(start * scale + 1e-9), 0), limit)
    hi = min(max(math.ceil((start + tile) * scale - 1e-9), lo), limit)
    return lo, hi


def plan_tiles(
    gray: np.ndarray,
    *,
    pixel_spacing_mm: float,
    target_mm_per_px: float = TRAINING_MM_PER_PX,
    tile: int = TILE_SIZE,
    stride_fraction: float = 0.5,
    min_breast_fraction: float = 0.25,
    max_resampled_pixels: int = MAX_RESAMPLED_PIXELS,
) -> TilePlan:
    """Resample the uint8 H x W ``gray`` image to the training scale, find the breast and
    choose the windows whose breast coverage is at least ``min_breast_fraction``."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise AnalysisInputError(f"expected a 2-D uint8 image, got {gray.dtype} {gray.shape}")
    if not 0.0 < stride_fraction <= 1.0:
        raise AnalysisInputError(f"stride_fraction must be within (0, 1], got {stride_fraction}")
    if not 0.0 < min_breast_fraction <= 1.0:
        raise AnalysisInputError(
            f"min_breast_fraction must be within (0, 1], got {min_breast_fraction}"
        )
    shape = resampled_shape(gray.shape, pixel_spacing_mm, target_mm_per_px)
    if shape[0] * shape[1] > max_resampled_pixels:
        raise AnalysisInputError(
            f"image of {gray.shape[1]}x{gray.shape[0]} px at {pixel_spacing_mm} mm/px covers "
            f"{gray.shape[1] * pixel_spacing_mm:.0f} x {gray.shape[0] * pixel_spacing_mm:.0f} "
            f"mm, over the limit of {max_resampled_pixels} pixels at {target_mm_per_px} "
            "mm/px: check the pixel spacing"
        )
    image = resample(gray, shape)
    mask = breast_mask(image)
    padded = (max(shape[0], tile), max(shape[1], tile))
    if padded != shape:
        image = np.pad(image, ((0, padded[0] - shape[0]), (0, padded[1] - shape[1])))
        mask = np.pad(mask, ((0, padded[0] - shape[0]), (0, padded[1] - shape[1])))
    stride = max(1, round(tile * stride_fraction))
    ys, xs = axis_origins(padded[0], tile, stride), axis_origins(padded[1], tile, stride)
    coverage = np.zeros((len(ys), len(xs)), dtype=np.float32)
    for r, y in enumerate(ys):
        band = mask[y : y + tile]
        inside_h = min(tile, shape[0] - y)  # padding does not count as window area
        for c, x in enumerate(xs):
            inside = inside_h * min(tile, shape[1] - x)
            coverage[r, c] = np.count_nonzero(band[:, x : x + tile]) / inside
    kept = tuple(
        (r, c)
        for r in range(len(ys))
        for c in range(len(xs))
        if coverage[r, c] >= min_breast_fraction
    )
    return TilePlan(
        image=image,
        mask=mask,
        original_shape=(int(gray.shape[0]), int(gray.shape[1])),
        resampled_shape=shape,
        tile=tile,
        stride=stride,
        ys=ys,
        xs=xs,
        coverage=coverage,
        kept=kept,
    )


def iter_tile_batches(
    plan: TilePlan, batch_size: int
) -> Iterator[tuple[tuple[tuple[int, int], ...], np.ndarray]]:
    """Yield ((row, col) of each window, uint8 N x tile x tile x 1 tiles), ``batch_size`` at
    a time; each batch is cut from the resampled image only when it is asked for."""
    if batch_size < 1:
        raise AnalysisInputError(f"batch_size must be >= 1, got {batch_size}")
    t = plan.tile
    for start in range(0, len(plan.kept), batch_size):
        cells = plan.kept[start : start + batch_size]
        batch = np.empty((len(cells), t, t, 1), dtype=np.uint8)
        for i, (r, c) in enumerate(cells):
            y, x = plan.ys[r], plan.xs[c]
            batch[i, :, :, 0] = plan.image[y : y + t, x : x + t]
        yield cells, batch
