"""Geometry of whole images: resampling to a physical pixel size and cutting square tiles.

Resampling uses Pillow on float32 data: Lanczos when shrinking (its kernel widens with the
reduction, so it is anti-aliased), bicubic when enlarging (no ringing-prone wide kernel).
Tiles outside the image are filled with a constant (the background), so a lesion at the
border stays at the tile centre.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["extract_tile", "resample_to_spacing", "resize"]


def _as_pair(spacing_mm: float | tuple[float, float]) -> tuple[float, float]:
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
    target_mm: float = 0.1,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resample an image from ``spacing_mm`` (row, col) to ``target_mm`` per pixel.

    Returns the float32 array and the (row, col) scale factor used: new pixels per old pixel,
    i.e. ``spacing / target`` rounded to whole output pixels (2.0 for 0.2 mm -> 0.1 mm, 0.5
    for 0.05 mm -> 0.1 mm). A coordinate ``x`` in the input maps to ``(x + 0.5) * scale - 0.5``.
    """
    row_mm, col_mm = _as_pair(spacing_mm)
    target = _as_pair(target_mm)[0]
    arr = np.asarray(pixels, dtype=np.float32)
    h, w = arr.shape
    rows = max(1, int(round(h * row_mm / target)))
    cols = max(1, int(round(w * col_mm / target)))
    return resize(arr, (rows, cols)), (rows / h, cols / w)


def extract_tile(
    pixels: np.ndarray,
    center_rc: tuple[float, float],
    side: int,
    out_size: int,
    *,
    fill: float = 0.0,
) -> np.ndarray:
    """A ``side`` x ``side`` window centred on ``center_rc`` (row, col, in pixels), resized
    to ``out_size`` x ``out_size`` when ``side`` differs. Parts outside the image are
    ``fill``. Returns float32 for float input, the input dtype otherwise (rounded, clipped).
    """
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    if side < 1 or out_size < 1:
        raise ValueError("side and out_size must be positive")
    h, w = arr.shape
    # Pixel index r0 + (side - 1) / 2 is the window's centre.
    r0 = int(math.floor(center_rc[0] - (side - 1) / 2 + 0.5))
    c0 = int(math.floor(center_rc[1] - (side - 1) / 2 + 0.5))
    window = np.full((side, side), fill, dtype=arr.dtype)
    sr0, sc0 = max(r0, 0), max(c0, 0)
    sr1, sc1 = min(r0 + side, h), min(c0 + side, w)
    if sr1 > sr0 and sc1 > sc0:
        window[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = arr[sr0:sr1, sc0:sc1]
    if side == out_size:
        return window
    resized = resize(window, (out_size, out_size))
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(resized), info.min, info.max).astype(arr.dtype)
    return resized.astype(arr.dtype, copy=False)
