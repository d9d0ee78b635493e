"""Altered views of a 299 x 299 tile: what a copy of a held-out test tile may look like.

Used by the benchmark of the held-out-test guard and by its tests (``docs/data-guards.md``):
rotations by any angle, rescales and shifts about the centre (one bilinear resampling, border
filled by reflection or a constant), intensity inversion, sensor noise and JPEG.
"""

from __future__ import annotations

import io

import numpy as np
from scipy import ndimage

from mammo_pipeline.data.schema import SOURCE_SIZE

_CENTRE = (SOURCE_SIZE - 1) / 2.0


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def rotate_scale(
    tile: np.ndarray,
    angle_deg: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    *,
    fill: str = "reflect",
) -> np.ndarray:
    """``tile`` rotated by ``angle_deg`` (counter-clockwise) and rescaled by ``scale`` about
    its centre, then moved by ``shift`` (rows, columns) pixels; the border the view uncovers
    is filled by ``fill`` ("reflect", "nearest" or "constant": black)."""
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    matrix = rotation / scale  # output pixel -> input pixel
    centre = np.array([_CENTRE, _CENTRE])
    offset = centre - matrix @ (centre + np.asarray(shift, dtype=np.float64))
    out = ndimage.affine_transform(
        np.asarray(tile, dtype=np.float32), matrix, offset=offset, order=1, mode=fill, cval=0.0
    )
    return _to_uint8(out)


def invert(tile: np.ndarray) -> np.ndarray:
    """The negative of a uint8 tile (255 - x)."""
    return (255 - np.asarray(tile, dtype=np.uint8)).astype(np.uint8)


def add_noise(tile: np.ndarray, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    """Gaussian sensor noise of ``sigma`` grey levels."""
    return _to_uint8(np.asarray(tile, dtype=np.float64) + rng.normal(0.0, sigma, tile.shape))


def jpeg(tile: np.ndarray, quality: int = 75) -> np.ndarray:
    """The tile after a JPEG round trip at ``quality``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(tile, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("L"), dtype=np.uint8)
