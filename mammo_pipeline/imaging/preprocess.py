"""THE path from a decoded image to the 8-bit tiles the model sees: one copy, every format.

Who uses it: the importers (``data/importers/tiling.py``: training tiles), ``/analyze``
(``analysis``: the windows it scores) and the service's decoding (``serving/image_io.py``).
So a tile the importer writes and the window ``/analyze`` scores at the same place of the same
film are the same bytes (:func:`cut_window` cuts both).

Whole films (:func:`prepare_film` -> :class:`PreparedFilm`):

1. **intensities** (:func:`to_intensity`): any numeric 2-D / H x W x 1/3/4 array (PNG 8/16
   bit, TIFF, PGM 8/16, JPEG, ``.npy``) becomes float32 "larger = denser" values (colour ->
   ITU-R 601 luma); a DICOM arrives as a :class:`MedicalImage` (Modality/VOI applied,
   MONOCHROME1 inverted by :mod:`.dicom`). No bit-depth rule is needed: see 4.
2. **scale**: the float intensities are resampled to :data:`TILE_MM_PER_PX` (0.1 mm/px, where
   a :data:`TILE_SIZE` = 299-px tile covers 29.9 mm) by the one anti-aliased resampler
   (:func:`.resample.resize`: Lanczos shrinking, bicubic enlarging); the spacing is the
   caller's, else the file's (DICOM), else the caller's default, and its source is recorded.
3. **breast**: ONE mask (:func:`mammo_pipeline.imaging.breast_mask`, rule in :mod:`.mask`).
4. **window**: intensities -> uint8 linearly from the breast's 0.5 / 99.9 percentiles
   (:func:`~mammo_pipeline.imaging.display_window`). Percentiles and Otsu are invariant to a
   positive scaling of the intensities, and the intensities are first divided by their
   largest magnitude (exact for integer scalings), so the same film stored as 8-bit PGM,
   8-bit PNG, 16-bit PNG (x 257), DICOM MONOCHROME2 or MONOCHROME1 gives the SAME prepared
   pixels, bit for bit. (A pure offset of the intensities only moves the mask's
   "no background visible" test, see :mod:`.mask`.)

Windows (:func:`window_starts`, :func:`breast_coverage`, :func:`cut_window`): the grid is
SYMMETRIC and inside the film: along each axis the first window starts at the edge, the last
ends at the other, and the windows between are spread evenly (steps at most the requested
stride), so the grid of a left-right mirrored film is the mirror of the grid; each step above
is mirror-exact too, so ``/analyze`` of ``pixels[:, ::-1]`` gives mirrored boxes and the same
score. No window overhangs the film (a black strip is nothing like a training tile). A side
no longer than a tile has one window, centred to within half a pixel.
A window is scored when at least :data:`MIN_BREAST_FRACTION` (0.8) of its part inside the
image is breast: the importer's rule for normal training tiles (one constant for both). With
the old 25 % rule the window score tracked breast coverage (Spearman -0.94 on real films:
the model never saw a window that was mostly background); ``benchmarks/coverage_bias.py``
measures it on SYNTHETIC films (see docs/architecture.md, "Preprocessing").

Tiles (images ``/predict`` takes, :func:`mammo_pipeline.serving.image_io.is_whole_film`) are
NOT prepared: an 8-bit tile is already the contract's pixel form (a tile exported from a
tfrecord must score as in training, so it is never re-stretched). A tile with more than 8
bits is brought to 8 bits by its nominal range, not by its content:
16-bit integers / 257 (the full range; the x 257 export of an 8-bit tile gives it back
exactly), floats as 0..1 when their maximum is <= 1 else as 0..255
(``data/preprocess.py::to_uint8_gray``); a DICOM tile, whose stored range says nothing about
the display, is windowed on the percentiles of all its pixels (a tile is all tissue).
The tile -> model input step is ``data/preprocess.py::prepare_image`` (the TF op of tf.data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from mammo_pipeline.imaging import MedicalImage, breast_mask, display_window, to_display_uint8
from mammo_pipeline.imaging.resample import resize, spacing_pair

#: Physical scale of the training tiles (mm per pixel): a tile covers TILE_SIZE * 0.1 mm.
#: The one definition (``data.schema`` re-exports it as TILE_MM_PER_PX).
TILE_MM_PER_PX: Final = 0.1
#: Side of a training tile in pixels (``data.schema`` re-exports it as SOURCE_SIZE).
TILE_SIZE: Final = 299
#: Smallest breast fraction of a window that is used: a normal training tile (importers) and
#: a window ``/analyze`` scores. Measured, see the module docstring.
MIN_BREAST_FRACTION: Final = 0.8
#: Largest prepared film (pixels at the training scale, about 80 x 80 cm).
MAX_PREPARED_PIXELS: Final = 64_000_000
#: ITU-R 601 luma weights (colour -> gray).
LUMA: Final = (0.299, 0.587, 0.114)

__all__ = [
    "LUMA",
    "MAX_PREPARED_PIXELS",
    "MIN_BREAST_FRACTION",
    "TILE_MM_PER_PX",
    "TILE_SIZE",
    "Box",
    "PreparedFilm",
    "breast_coverage",
    "cut_window",
    "extract_tile",
    "luma",
    "prepare_film",
    "to_intensity",
    "window_starts",
]


def luma(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3/4 (alpha ignored) -> H x W float64 luma."""
    return np.asarray(rgb)[..., :3].astype(np.float64) @ np.array(LUMA)


def to_intensity(pixels: np.ndarray | MedicalImage) -> np.ndarray:
    """Any numeric 2-D or H x W x 1/3/4 array -> 2-D float32 intensities, larger = denser.

    Values are kept as they are (no bit-depth scaling: everything downstream is invariant
    to it). Raises ValueError for other shapes, non-numeric dtypes or non-finite values.
    """
    if isinstance(pixels, MedicalImage):
        return pixels.pixels
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = luma(arr)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"expected a 2-D grayscale or H x W x 1/3/4 image, got shape {arr.shape}")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)
            or np.issubdtype(arr.dtype, np.floating)):  # fmt: skip
        raise ValueError(f"unsupported pixel dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(out)):
        raise ValueError("image contains NaN or infinite values")
    return out


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned pixel box in edge coordinates (pixel ``i`` covers ``[i, i + 1)``),
    ``x1`` / ``y1`` exclusive: whole pixels for windows, fractions for lesions mapped from
    the original film. The one box of the project (analysis regions, importer tiles)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_source(
        cls, top: float, left: float, bottom: float, right: float, scale: tuple[float, float]
    ) -> Box:
        """A box given as (top, left, bottom, right) in the original film, mapped by
        ``scale`` (prepared pixels per original pixel, (row, col))."""
        sy, sx = scale
        return cls(left * sx, top * sy, right * sx, bottom * sy)

    top = property(lambda self: self.y0)
    left = property(lambda self: self.x0)
    bottom = property(lambda self: self.y1)
    right = property(lambda self: self.x1)

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0) * max(self.y1 - self.y0, 0)

    @property
    def center_index(self) -> tuple[float, float]:
        """The centre as a (row, col) pixel index."""
        return (self.y0 + self.y1) / 2 - 0.5, (self.x0 + self.x1) / 2 - 0.5

    @property
    def max_side(self) -> float:
        return max(self.y1 - self.y0, self.x1 - self.x0)

    def intersection(self, other: Box) -> float:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(w, 0) * max(h, 0)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def to_dict(self) -> dict[str, float]:
        """``{"x0", "y0", "x1", "y1"}``; fractions rounded to 0.01 px."""
        return {k: _num(getattr(self, k)) for k in ("x0", "y0", "x1", "y1")}


def _num(v: float) -> float:
    return v if isinstance(v, int) else round(float(v), 2)


@dataclass(frozen=True)
class PreparedFilm:
    """A whole film at the training scale: what tiles are cut from (importer, ``/analyze``)."""

    pixels: np.ndarray  # 2-D uint8, windowed
    breast: np.ndarray  # 2-D bool, same shape
    scale: tuple[float, float]  # prepared pixels per original pixel (row, col)
    spacing_mm: tuple[float, float]  # of the original image (row, col)
    spacing_source: str  # "dicom" (the file), or the caller's label ("form", "default", ...)
    window: tuple[float, float]  # intensities (as given) mapped to 0 and 255
    original_shape: tuple[int, int]
    target_mm: float = TILE_MM_PER_PX

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def spacing_from_file(self) -> bool:
        return self.spacing_source == "dicom"

    def breast_fraction(self) -> float:
        return float(self.breast.mean())

    def original_span(self, start: int, side: int, axis: int) -> tuple[int, int]:
        """Original-image pixels [lo, hi) covered by prepared pixels [start, start + side)
        along ``axis`` (0 rows, 1 columns), clipped to the image."""
        k = self.original_shape[axis] / self.shape[axis]
        limit = self.original_shape[axis]
        lo = min(max(math.floor(start * k + 1e-9), 0), limit)
        hi = min(max(math.ceil((start + side) * k - 1e-9), lo), limit)
        return lo, hi

    def original_box(self, top: int, left: int, side: int) -> Box:
        """The window at (top, left) in the ORIGINAL image's pixel coordinates."""
        (y0, y1), (x0, x1) = self.original_span(top, side, 0), self.original_span(left, side, 1)
        return Box(x0, y0, x1, y1)


def prepare_film(
    image: np.ndarray | MedicalImage,
    *,
    spacing_mm: float | Sequence[float] | None = None,
    spacing_source: str = "given",
    default_spacing_mm: float | None = None,
    target_mm: float = TILE_MM_PER_PX,
    max_pixels: int = MAX_PREPARED_PIXELS,
) -> PreparedFilm:
    """Intensities -> training scale -> breast mask -> 8-bit window (module docstring).

    Spacing: ``spacing_mm`` (labelled ``spacing_source``) wins, else the
    :class:`MedicalImage`'s own (source ``image.source``, "dicom"), else
    ``default_spacing_mm`` ("default"); ValueError when none is known, for bad pixels, or
    when the film would be over ``max_pixels`` at ``target_mm`` (a wrong spacing).
    """
    values = to_intensity(image)
    own = image.pixel_spacing_mm if isinstance(image, MedicalImage) else None
    if spacing_mm is not None:
        spacing, source = spacing_pair(spacing_mm), spacing_source
    elif own is not None:
        spacing, source = spacing_pair(own), image.source  # type: ignore[union-attr]
    elif default_spacing_mm is not None:
        spacing, source = spacing_pair(default_spacing_mm), "default"
    else:
        raise ValueError("the image has no pixel spacing and no default was given")
    h, w = values.shape
    rows = max(1, round(h * spacing[0] / target_mm))
    cols = max(1, round(w * spacing[1] / target_mm))
    if rows * cols > max_pixels:
        raise ValueError(
            f"image of {w}x{h} px at {spacing[1]:g} mm/px covers {w * spacing[1]:.0f} x "
            f"{h * spacing[0]:.0f} mm, over the limit of {max_pixels} pixels at "
            f"{target_mm:g} mm/px: check the pixel spacing"
        )
    # Divide by the largest magnitude: an integer rescaling (x 257) then gives identical floats.
    norm = float(np.abs(values).max())
    norm = norm if norm > 0 else 1.0
    given = image.pixels if isinstance(image, MedicalImage) else np.asarray(image)
    if np.may_share_memory(values, given):
        scaled = values / np.float32(norm)  # never change the caller's array
    else:  # our own float copy: in place
        scaled = values
        scaled /= np.float32(norm)
    del values
    if (rows, cols) != scaled.shape:
        scaled = resize(scaled, (rows, cols))
    breast = breast_mask(scaled)
    lo, hi = display_window(scaled, breast)
    pixels = to_display_uint8(scaled, (lo, hi))
    return PreparedFilm(
        pixels=pixels,
        breast=breast,
        scale=(rows / h, cols / w),
        spacing_mm=spacing,
        spacing_source=source,
        window=(lo * norm, hi * norm),
        original_shape=(h, w),
        target_mm=float(target_mm),
    )


def window_starts(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Window starts along one axis, mirror-symmetric and INSIDE the image: the first window
    starts at 0, the last ends at ``length``, and the ``n`` windows are spread evenly between
    (steps of ``(length - tile) / (n - 1)``, at most ``stride``, rounded symmetrically), so
    the starts of a mirrored axis are the mirror of the starts. ``n`` is the fewest windows
    that keep steps within ``stride``, plus one when that avoids a middle window (odd span).
    A side no longer than ``tile`` gets one window, centred to within half a pixel.

    No window hangs over the edge: an overhang would be filled with black, a strip no
    training tile has (measured: with a grid overhanging by up to half a stride, the top-1
    hit rate of a tiny CNN on SYNTHETIC films fell from 1.00 to 0.57)."""
    if length < 1 or tile < 1 or stride < 1:
        raise ValueError(f"length, tile and stride must be >= 1, got {length}, {tile}, {stride}")
    if length <= tile:
        return (-((tile - length) // 2),)
    span = length - tile
    n = math.ceil(span / stride) + 1
    if span % 2 and n % 2:  # a middle window could not sit exactly in the middle
        n += 1
    starts = [0] * n
    for i in range(n):
        j = min(i, n - 1 - i)
        near = (2 * j * span + (n - 1)) // (2 * (n - 1))  # round(j * span / (n - 1))
        starts[i] = near if i == j else span - near
    return tuple(starts)


def _inside(start: int, side: int, limit: int) -> tuple[int, int]:
    return max(start, 0), min(start + side, limit)


def breast_coverage(prepared: PreparedFilm, top: int, left: int, side: int = TILE_SIZE) -> float:
    """Breast fraction of the window's part inside the film (0 when none of it is)."""
    (r0, r1), (c0, c1) = (
        _inside(top, side, prepared.shape[0]),
        _inside(left, side, prepared.shape[1]),
    )
    area = max(r1 - r0, 0) * max(c1 - c0, 0)
    return float(np.count_nonzero(prepared.breast[r0:r1, c0:c1]) / area) if area else 0.0


def cut_window(
    prepared: PreparedFilm | np.ndarray, top: int, left: int, side: int = TILE_SIZE, fill=0
) -> np.ndarray:
    """The ``side`` x ``side`` window whose top-left pixel is (``top``, ``left``) (may lie
    outside: that part is ``fill``), as a new array of the pixels' dtype. The one cutter of
    importer tiles and ``/analyze`` windows."""
    pixels = prepared.pixels if isinstance(prepared, PreparedFilm) else np.asarray(prepared)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    if side < 1:
        raise ValueError("side must be positive")
    h, w = pixels.shape
    if top >= 0 and left >= 0 and top + side <= h and left + side <= w:
        return pixels[top : top + side, left : left + side].copy()
    out = np.full((side, side), fill, dtype=pixels.dtype)
    (r0, r1), (c0, c1) = _inside(top, side, h), _inside(left, side, w)
    if r1 > r0 and c1 > c0:
        out[r0 - top : r1 - top, c0 - left : c1 - left] = pixels[r0:r1, c0:c1]
    return out


def extract_tile(
    pixels: np.ndarray, center_rc: tuple[float, float], side: int, out_size: int, *, fill=0
) -> np.ndarray:
    """The ``side`` x ``side`` window centred on ``center_rc`` (row, col pixel index; cut by
    :func:`cut_window`), resized to ``out_size`` when ``side`` differs (anti-aliased).
    Returns float32 for float input, the input dtype otherwise (rounded, clipped)."""
    arr = np.asarray(pixels)
    if side < 1 or out_size < 1:
        raise ValueError("side and out_size must be positive")
    # Pixel index top + (side - 1) / 2 is the window's centre.
    top = int(math.floor(center_rc[0] - (side - 1) / 2 + 0.5))
    left = int(math.floor(center_rc[1] - (side - 1) / 2 + 0.5))
    window = cut_window(arr, top, left, side, fill)
    if side == out_size:
        return window
    resized = resize(window, (out_size, out_size))
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(resized), info.min, info.max).astype(arr.dtype)
    return resized.astype(arr.dtype, copy=False)
