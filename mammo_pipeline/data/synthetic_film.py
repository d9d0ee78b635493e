"""SYNTHETIC whole mammograms ("films") with a lesion planted at a known place.

A film is drawn at the scale of the training tiles (0.1 mm per pixel, so a 299-pixel tile
covers 29.9 mm) and then resampled to the requested ``mm_per_px``. It shows a CC-like view:
a dark background with sensor noise and a half-ellipse breast against the chest-wall side,
filled with the same kind of tissue texture as :mod:`mammo_pipeline.data.synthetic` (density
variation at three scales, fibrous streaks, noise) at the same physical scale, with a density
falloff towards the skin line. The lesion (a mass or a calcification cluster) is drawn by the
tile generator's own functions on a tile-sized patch and added to the film, so it looks as in
the training tiles at the same physical size.

Everything returned is SYNTHETIC (``SyntheticFilm.synthetic`` is always True and
``SyntheticFilm.tag`` is ``"SYNTHETIC"``); it is for tests, demos and benchmarks, never a
stand-in for real mammograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from mammo_pipeline.data.schema import LABEL_NAMES, TILE_MM_PER_PX
from mammo_pipeline.data.synthetic import SYNTHETIC_TAG, S, _add_calcifications, _add_mass

LesionKind = Literal["none", "mass", "calcification"]

#: Scale at which the tile generator draws (mm per pixel); films are drawn at it too.
DRAW_MM_PER_PX = TILE_MM_PER_PX
#: Width of the density falloff at the skin line (mm).
SKIN_FALLOFF_MM = 8.0
#: Patch intensity above which a lesion pixel counts towards the lesion's box.
LESION_BOX_LEVEL = 5.0

_LABELS = {("mass", False): 2, ("mass", True): 4, ("calcification", False): 1}
_LABELS[("calcification", True)] = 3


@dataclass(frozen=True)
class SyntheticFilm:
    """A SYNTHETIC whole mammogram and its ground truth (all in output pixel coordinates)."""

    pixels: np.ndarray  # (H, W) uint8 or uint16; larger = denser
    breast_mask: np.ndarray  # (H, W) bool, the planted breast region
    lesion: LesionKind
    malignant: bool
    #: (x0, y0, x1, y1) with x1/y1 exclusive, or None when there is no lesion
    lesion_box: tuple[int, int, int, int] | None
    mm_per_px: float
    seed: int
    side: Literal["left", "right"]
    synthetic: bool = True
    tag: str = SYNTHETIC_TAG

    @property
    def label(self) -> int:
        """The 5-class label of the data contract (0 when there is no lesion)."""
        return 0 if self.lesion == "none" else _LABELS[(self.lesion, self.malignant)]

    @property
    def label_normal(self) -> int:
        return int(self.label > 0)

    def describe(self) -> str:
        h, w = self.pixels.shape
        what = LABEL_NAMES[self.label]
        where = f" at box {self.lesion_box}" if self.lesion_box else ""
        return (
            f"{self.tag} film {w}x{h} px at {self.mm_per_px} mm/px, seed {self.seed}, "
            f"breast on the {self.side}: {what}{where}"
        )


def _smooth_noise(rng: np.random.Generator, grid: tuple[int, int], shape: tuple[int, int]):
    """Zero-mean smooth noise: a (rows, cols) random grid resized bicubically to ``shape``."""
    small = rng.standard_normal((max(grid[0], 2), max(grid[1], 2))).astype(np.float32)
    img = Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _tissue_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """The tile generator's texture recipe scaled to a whole film drawn at 0.1 mm/px.

    Same amplitudes and correlation lengths as ``synthetic._tissue`` (grids of 3, 9 and 28
    cells per tile side; streaks about 75 x 9 px), the streaks running from the chest wall
    towards the nipple as in a real breast.
    """
    h, w = shape
    img = np.zeros(shape, dtype=np.float32)
    for amplitude, per_tile in ((22.0, 3), (12.0, 9), (5.0, 28)):
        grid = (round(per_tile * h / S), round(per_tile * w / S))
        img += amplitude * _smooth_noise(rng, grid, shape)
    streak_grid = (round(48 * h / (1.5 * S)), round(6 * w / (1.5 * S)))
    img += 7.0 * _smooth_noise(rng, streak_grid, shape)
    return img


def _lesion_patch(rng: np.random.Generator, lesion: LesionKind, malignant: bool) -> np.ndarray:
    """A tile-sized patch holding only the lesion, drawn by the tile generator."""
    patch = np.zeros((S, S), dtype=np.float32)
    if lesion == "mass":
        _add_mass(patch, rng, malignant)
    elif lesion == "calcification":
        _add_calcifications(patch, rng, malignant)
    return patch


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _ellipse_radius(shape: tuple[int, int], cy: float, ay: float, ax: float) -> np.ndarray:
    """Normalised elliptic radius (1 on the skin line) of each pixel centre; chest wall at x=0."""
    yy = (np.arange(shape[0], dtype=np.float32)[:, None] + 0.5 - cy) / ay
    xx = (np.arange(shape[1], dtype=np.float32)[None, :] + 0.5) / ax
    return np.sqrt(yy * yy + xx * xx)


def make_film(
    height: int,
    width: int,
    *,
    lesion: LesionKind = "mass",
    malignant: bool = True,
    seed: int = 0,
    mm_per_px: float = 0.1,
    side: Literal["left", "right"] = "left",
    dtype: Literal["uint8", "uint16"] = "uint8",
    lesion_center: tuple[float, float] | None = None,
    skin_falloff_mm: float = SKIN_FALLOFF_MM,
) -> SyntheticFilm:
    """A SYNTHETIC whole mammogram of ``height`` x ``width`` pixels at ``mm_per_px``.

    ``lesion_center`` is an optional (y, x) in output pixels for the lesion's centre; by
    default it is drawn at random well inside the breast. ``dtype="uint16"`` scales the
    values to the full 16-bit range (x 257), the convention of
    :func:`mammo_pipeline.data.preprocess.to_uint8_gray`. ``skin_falloff_mm`` is the
    width of the density falloff at the skin line (a tiny value draws the tissue at full
    density up to the edge: ``benchmarks/coverage_bias.py`` uses it to leave the window
    geometry alone).
    """
    if height < 16 or width < 16:
        raise ValueError(f"a film needs at least 16 x 16 pixels, got {height} x {width}")
    if not (math.isfinite(mm_per_px) and 0.01 <= mm_per_px <= 1.0):
        raise ValueError(f"mm_per_px must be within 0.01..1.0, got {mm_per_px}")
    if not (math.isfinite(skin_falloff_mm) and skin_falloff_mm > 0):
        raise ValueError(f"skin_falloff_mm must be positive, got {skin_falloff_mm}")
    if lesion not in ("none", "mass", "calcification"):
        raise ValueError(f"lesion must be 'none', 'mass' or 'calcification', got {lesion!r}")
    rng = np.random.default_rng([seed, 7_654_321])
    k = mm_per_px / DRAW_MM_PER_PX  # drawing pixels per output pixel
    dh, dw = max(round(height * k), 16), max(round(width * k), 16)

    # Breast geometry in drawing pixels (chest wall on the left; flipped at the end).
    cy = dh / 2 * (1 + rng.uniform(-0.05, 0.05))
    ay = dh * rng.uniform(0.40, 0.46)
    ax = dw * rng.uniform(0.62, 0.80)
    r = _ellipse_radius((dh, dw), cy, ay, ax)
    falloff = skin_falloff_mm / DRAW_MM_PER_PX / min(ay, ax)  # in units of r
    profile = np.sqrt(np.clip((1.0 - r) / falloff, 0.0, 1.0))

    background = float(rng.uniform(4.0, 12.0))
    tissue = float(rng.uniform(95.0, 150.0)) + _tissue_texture(rng, (dh, dw))
    img = background + (tissue - background) * profile
    del tissue, r, profile

    box_d = None
    if lesion != "none":
        patch = _lesion_patch(rng, lesion, malignant)
        px0, py0, px1, py1 = _bbox(patch > LESION_BOX_LEVEL)
        if lesion_center is None:  # inside the breast, away from the skin line
            rho, phi = rng.uniform(0.25, 0.6), rng.uniform(-1.0, 1.0)
            cyl, cxl = cy + rho * ay * math.sin(phi), rho * ax * math.cos(phi)
        else:
            cyl, cxl = lesion_center[0] * k, lesion_center[1] * k
            if side == "right":
                cxl = dw - cxl
        oy = round(cyl - (py0 + py1) / 2)
        ox = round(cxl - (px0 + px1) / 2)
        ys, xs = slice(max(oy, 0), min(oy + S, dh)), slice(max(ox, 0), min(ox + S, dw))
        img[ys, xs] += patch[ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox]
        box_d = (px0 + ox, py0 + oy, px1 + ox, py1 + oy)
    img += rng.normal(0.0, 3.0, size=img.shape).astype(np.float32)
    np.clip(img, 0.0, 255.0, out=img)

    if (dh, dw) != (height, width):
        resized = Image.fromarray(img).resize((width, height), Image.Resampling.BILINEAR)
        img = np.asarray(resized, dtype=np.float32)
    scale = 257.0 if dtype == "uint16" else 1.0
    pixels = np.clip(np.round(img * scale), 0, 255 * scale).astype(dtype)
    mask = _ellipse_radius((height, width), cy / k, ay / k, ax / k) <= 1.0

    box = None
    if box_d is not None:
        bx0, by0 = max(math.floor(box_d[0] / k), 0), max(math.floor(box_d[1] / k), 0)
        bx1, by1 = min(math.ceil(box_d[2] / k), width), min(math.ceil(box_d[3] / k), height)
        box = (bx0, by0, bx1, by1)
    if side == "right":
        pixels, mask = pixels[:, ::-1].copy(), mask[:, ::-1].copy()
        if box is not None:
            box = (width - box[2], box[1], width - box[0], box[3])
    return SyntheticFilm(
        pixels=pixels,
        breast_mask=mask,
        lesion=lesion,
        malignant=bool(malignant) and lesion != "none",
        lesion_box=box,
        mm_per_px=float(mm_per_px),
        seed=seed,
        side=side,
    )
