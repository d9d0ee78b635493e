"""Resampling whole images to a physical pixel size: the project's one resampler.

Pillow on float32 data: Lanczos when shrinking (its kernel widens with the reduction, so it
is anti-aliased), bicubic when enlarging (no ringing-prone wide kernel). Pillow's kernels are
mirror-exact (the resampled mirror image is the mirror of the resampled image, bit for bit).
Cutting tiles: :mod:`.preprocess`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["resample_to_spacing", "resize", "spacing_pair"]


def spacing_pair(spacing_mm: float | Sequence[float]) -> tuple[float, float]:
    """(row, col) spacing in mm from one number or a pair; ValueError unless positive."""
    if isinstance(spacing_mm, int | float):
        pair = (float(spacing_mm), float(spacing_mm))
    else:
        row, col = spacing_mm
        pair = (float(row), float(col))
    if not all(math.isfinite(v) and v > 0 for v in pair):
        raise ValueError(f"pixel spacing must be positive and finite, got {spacing_mm}")
    return pair


def resize(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D array to ``shape`` (rows, cols) as float32 (anti-aliased when shrinking)."""
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"target shape must be positive, got {shape}")
    if (rows, cols) == arr.shape:
        return arr.copy()
    shrinking = rows * cols < arr.shape[0] * arr.shape[1]
    method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    out = Image.fromarray(np.ascontiguousarray(arr), mode="F").resize((cols, rows), method)
    return np.asarray(out, dtype=np.float32)


def resample_to_spacing(
    pixels: np.ndarray,
    spacing_mm: float | tuple[float, float],
    target_mm: float,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample an image from ``spacing_mm`` (row, col) to ``target_mm`` per pixel.

    Returns the float32 array and the (row, col) scale factor used: new pixels per old pixel,
    i.e. ``spacing / target`` rounded to whole output pixels (2.0 for 0.2 mm -> 0.1 mm, 0.5
    for 0.05 mm -> 0.1 mm). A coordinate ``x`` in the input maps to ``(x + 0.5) * scale - 0.5``.
    """
    row_mm, col_mm = spacing_pair(spacing_mm)
    target = spacing_pair(target_mm)[0]
    arr = np.asarray(pixels, dtype=np.float32)
    h, w = arr.shape
    rows = max(1, int(round(h * row_mm / target)))
    cols = max(1, int(round(w * col_mm / target)))
    return resize(arr, (rows, cols)), (rows / h, cols / w)
