"""Whole medical images (mammograms) as read from DICOM or PGM files, in one in-memory form.

This package owns :class:`MedicalImage` (what every reader returns), :class:`ImageReadError`
(the base of the readers' errors, with an HTTP status for the service), the tissue mask of a
mammogram (:func:`breast_mask`) and the intensity window that turns a mammogram into 8-bit
tiles (:func:`display_window`, :func:`to_display_uint8`).

Readers live in :mod:`.dicom` and :mod:`.pgm`; resampling to a physical pixel size and cutting
tiles in :mod:`.resample`. Nothing here knows about patients: readers never return or print
patient identifiers.

May import: config, errors and common only; data (importers), analysis and serving build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammo_pipeline.errors import MammoError

__all__ = [
    "ImageReadError",
    "MedicalImage",
    "breast_mask",
    "display_window",
    "to_display_uint8",
]


class ImageReadError(MammoError):
    """A medical image could not be read; ``status`` is the HTTP status that fits
    (415: not a format we read, 422: the right format but unusable content)."""

    status: int = 422

    def __init__(self, message: str, *, status: int = 422) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class MedicalImage:
    """One grayscale image with its physical pixel size.

    ``pixels`` is 2-D float32 where larger means denser (brighter on a film viewer): DICOM
    MONOCHROME1 data are inverted by the reader. ``pixel_spacing_mm`` is (row, col) spacing in
    millimetres, or None when the file does not say. ``bits_stored`` is the stored bit depth,
    ``source`` the format it came from ("dicom", "pgm").
    """

    pixels: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    bits_stored: int
    source: str

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2:
            raise ValueError(f"pixels must be 2-D, got shape {self.pixels.shape}")
        if self.pixels.dtype != np.float32:
            raise ValueError(f"pixels must be float32, got {self.pixels.dtype}")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D array of finite values (maximises between-class variance)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    weight_bg = np.cumsum(hist).astype(np.float64)
    weight_fg = weight_bg[-1] - weight_bg
    sum_bg = np.cumsum(hist * centers)
    mean_bg = sum_bg / np.maximum(weight_bg, 1)
    mean_fg = (sum_bg[-1] - sum_bg) / np.maximum(weight_fg, 1)
    between = weight_bg * weight_fg * (mean_bg - mean_fg) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def breast_mask(pixels: np.ndarray, *, max_side: int = 512) -> np.ndarray:
    """Boolean mask of the breast: Otsu threshold, then the largest connected component with
    its holes filled (film labels, markers and scanner borders are smaller separate blobs).

    The work is done on a block-averaged copy whose longest side is at most ``max_side``
    pixels; the result is mapped back to the full shape (nearest neighbour). Returns an
    all-False mask for a flat image.
    """
    from scipy import ndimage

    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    h, w = arr.shape
    step = max(1, int(np.ceil(max(h, w) / max_side)))
    hs, ws = h // step, w // step
    if hs == 0 or ws == 0:
        small = arr
        step = 1
    else:
        small = arr[: hs * step, : ws * step].reshape(hs, step, ws, step).mean(axis=(1, 3))
    finite = small[np.isfinite(small)]
    if finite.size == 0 or float(finite.max()) <= float(finite.min()):
        return np.zeros((h, w), dtype=bool)
    fg = small > _otsu_threshold(finite)
    fg = ndimage.binary_opening(fg, iterations=1) if min(fg.shape) > 4 else fg
    labels, count = ndimage.label(fg)
    if count == 0:
        return np.zeros((h, w), dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (int(np.argmax(sizes)) + 1)
    largest = ndimage.binary_fill_holes(largest)
    rows = np.minimum(np.arange(h) // step, largest.shape[0] - 1)
    cols = np.minimum(np.arange(w) // step, largest.shape[1] - 1)
    return largest[rows[:, None], cols[None, :]]


def display_window(
    pixels: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    low_percentile: float = 0.5,
    high_percentile: float = 99.9,
    max_samples: int = 1_000_000,
) -> tuple[float, float]:
    """The (low, high) intensity window of a mammogram: percentiles of the breast pixels.

    ``mask`` selects the breast (default: :func:`breast_mask`); when it is empty the
    percentiles of all pixels are used, and when those coincide the min-max. Percentiles
    rather than min-max keep a film label or a single hot pixel from flattening the tissue.
    More than ``max_samples`` pixels are subsampled with an even stride.
    """
    arr = np.asarray(pixels, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or infinite values")
    if mask is None:
        mask = breast_mask(arr)
    values = arr[mask] if mask.any() else arr.ravel()
    if values.size > max_samples:  # an evenly strided sample estimates percentiles closely
        values = values[:: int(np.ceil(values.size / max_samples))]
    lo, hi = np.percentile(values, [low_percentile, high_percentile])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return float(lo), float(hi)


def to_display_uint8(
    pixels: np.ndarray,
    window: tuple[float, float] | None = None,
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Map intensities linearly from ``window`` (default :func:`display_window`) to 0..255.

    Values below the window (the background outside the breast) become 0, above it 255. A
    flat image (empty window) becomes all zeros. Raises ValueError on non-finite pixels.
    """
    arr = np.asarray(pixels, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or infinite values")
    lo, hi = window if window is not None else display_window(arr, mask)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (arr - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
