"""Whole medical images (mammograms) as read from DICOM or PGM files, in one in-memory form.

This package owns :class:`MedicalImage` (what every reader returns), :class:`ImageReadError`
(the base of the readers' errors, with an HTTP status for the service), the tissue mask of a
mammogram (:func:`breast_mask`, rule in :mod:`.mask`) and the intensity window that turns a
mammogram into 8-bit tiles (:func:`display_window`, :func:`to_display_uint8`).

Readers live in :mod:`.dicom` and :mod:`.pgm`; resampling to a physical pixel size in
:mod:`.resample`; THE path from any decoded image to the model's tiles (intensities, the
training scale, mask, window, the window grid, cutting) in :mod:`.preprocess`. Nothing here
knows about patients: readers never return or print patient identifiers.

May import: config, errors and common only; data (importers), analysis and serving build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammo_pipeline.errors import MammoError
from mammo_pipeline.imaging.mask import breast_mask

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
    More than ``max_samples`` pixels are subsampled by whole rows (an even row stride), so
    the window of a left-right mirrored image is the same.
    """
    arr = np.asarray(pixels, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or infinite values")
    if mask is None:
        mask = breast_mask(arr)
    if not mask.any():
        mask = np.ones(arr.shape, dtype=bool)
    count = int(np.count_nonzero(mask))
    if count > max_samples:  # an evenly strided sample of rows estimates percentiles closely
        step = int(np.ceil(count / max_samples))
        arr, mask = arr[::step], mask[::step]
    values = arr[mask]
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
    scaled = arr - np.float32(lo)  # one float temporary, the rest in place (film-sized)
    scaled *= np.float32(255.0 / (hi - lo))
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)
