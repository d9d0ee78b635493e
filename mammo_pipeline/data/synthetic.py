"""Synthetic mammogram-like ROI tiles in the exact public DDSM schema.

The tiles are *synthetic*: low-frequency tissue density, fibrous streaks and sensor noise,
with positives carrying either a mass (benign: smooth oval; malignant: irregular and
spiculated) or a cluster of micro-calcifications (benign: few, round, coarse; malignant:
many, small, pleomorphic). A classifier can genuinely learn the task, which makes the
pipeline testable end to end without the real (licensed) data set.

Like the public ROI tiles, each positive lesion region is written as several *views*
(``views_per_lesion``): overlapping crops of one larger synthetic region at random offsets
(two views are shifted by up to ``VIEW_SHIFT`` = 60 px, 20 % of a tile), each under a random
flip / 90-degree rotation. Negatives stay independent tiles. Views of one lesion are
near-duplicates: a per-tile train/validation split leaks them (see
:mod:`mammo_pipeline.data.grouped_split`). The held-out test split draws its own lesions.

Every tile is a pure function of (seed, split, index) and the record plan (``n``,
``positive_fraction``, ``views_per_lesion``), so generation is deterministic and independent
of how records are split over files. ``views_per_lesion=1`` reproduces the single-view data
of earlier versions exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.provenance import write_sidecar
from mammo_pipeline.data.schema import LABEL_NAMES, SOURCE_SIZE
from mammo_pipeline.data.tfrecord_io import Compression, write_records

SYNTHETIC_TAG = "SYNTHETIC"
_SPLIT_IDS = {"train": 0, "test": 1, "cv": 2}
S = SOURCE_SIZE
#: Largest shift (pixels, per axis) between two views of one lesion: ~20 % of a tile.
VIEW_SHIFT = 60
#: Views of a lesion keep it within this many pixels of the region centre, so it stays
#: within +-(VIEW_SHIFT / 2 + 15) = +-45 px of every view's centre, as in single tiles.
_VIEW_LESION_SPREAD = 15.0
#: Random-stream tags (distinct from the per-index streams and the label stream).
_LESION_STREAM = 2_000_003
_VIEW_STREAM = 3_000_017


def _upsampled_noise(rng: np.random.Generator, grid: tuple[int, int], size: int) -> np.ndarray:
    """Smooth noise: a small random grid resized bicubically to size x size (zero mean)."""
    small = rng.standard_normal(grid).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _tissue(rng: np.random.Generator, size: int = S) -> np.ndarray:
    """Background: density variation at three scales, a fibrous texture and a skin falloff."""
    img = (
        22.0 * _upsampled_noise(rng, (3, 3), size)
        + 12.0 * _upsampled_noise(rng, (9, 9), size)
        + 5.0 * _upsampled_noise(rng, (28, 28), size)
    )
    # Fibrous streaks: anisotropic noise rotated to a random orientation.
    big = int(size * 1.5)
    streak = rng.standard_normal((6, 48)).astype(np.float32)
    streak_img = Image.fromarray(streak, mode="F").resize((big, big), Image.Resampling.BICUBIC)
    streak_img = streak_img.rotate(float(rng.uniform(0, 180)), Image.Resampling.BILINEAR)
    off = (big - size) // 2
    img += 7.0 * np.asarray(streak_img, dtype=np.float32)[off : off + size, off : off + size]
    # Density falloff towards one edge, as near the skin line.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
    img += float(rng.uniform(0, 30)) * ramp
    img += float(rng.uniform(95, 150))
    img += rng.normal(0.0, 3.0, size=(size, size)).astype(np.float32)
    return img


def _add_mass(
    img: np.ndarray, rng: np.random.Generator, malignant: bool, spread: float = 45.0
) -> None:
    # ROI tiles of the public set are cropped around the abnormality: lesions sit near the
    # centre and are large relative to the tile.
    size = img.shape[0]
    r0 = float(rng.uniform(18, 42))
    cy, cx = size / 2 + rng.uniform(-spread, spread, size=2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    dist = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    boundary = np.full_like(theta, r0)
    if malignant:  # irregular lobulated outline
        for k in range(2, 7):
            boundary += r0 * rng.uniform(0.04, 0.12) * np.cos(k * theta + rng.uniform(0, 6.3))
    else:  # smooth oval
        boundary *= 1 + rng.uniform(0.0, 0.25) * np.cos(2 * theta + rng.uniform(0, 6.3))
    softness = 2.0 if malignant else 3.5
    blob = 1.0 / (1.0 + np.exp((dist - boundary) / softness))
    amplitude = float(rng.uniform(40, 70))
    img += amplitude * blob
    if malignant:  # spicules radiating from the margin
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(7, 15))):
            a = rng.uniform(0, 2 * np.pi)
            length = r0 * rng.uniform(1.6, 2.8)
            x0, y0 = cx + 0.7 * r0 * np.cos(a), cy + 0.7 * r0 * np.sin(a)
            x1, y1 = cx + length * np.cos(a), cy + length * np.sin(a)
            draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(1, 3)))
        spic = np.asarray(mask.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32) / 255
        img += 0.7 * amplitude * spic


def _add_calcifications(
    img: np.ndarray, rng: np.random.Generator, malignant: bool, spread: float = 45.0
) -> None:
    size = img.shape[0]
    n = int(rng.integers(12, 30)) if malignant else int(rng.integers(6, 12))
    cluster = float(rng.uniform(10, 20)) if malignant else float(rng.uniform(14, 28))
    cy, cx = size / 2 + rng.uniform(-spread, spread, size=2)
    for _ in range(n):
        py, px = cy + rng.normal(0, cluster), cx + rng.normal(0, cluster)
        if malignant:  # small, varied, sometimes elongated
            sy, sx = rng.uniform(0.9, 1.8), rng.uniform(0.9, 2.8)
        else:  # coarse and round
            sy = sx = rng.uniform(1.8, 3.0)
        y0, y1 = int(max(py - 8, 0)), int(min(py + 9, size))
        x0, x1 = int(max(px - 8, 0)), int(min(px + 9, size))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        spot = np.exp(-(((yy - py) / sy) ** 2 + ((xx - px) / sx) ** 2) / 2)
        img[y0:y1, x0:x1] += float(rng.uniform(80, 130)) * spot


def _add_lesion(img: np.ndarray, rng: np.random.Generator, label: int, spread: float) -> None:
    if label in (2, 4):
        _add_mass(img, rng, malignant=label == 4, spread=spread)
    elif label in (1, 3):
        _add_calcifications(img, rng, malignant=label == 3, spread=spread)


def make_tile(seed: int, split: str, index: int, label: int) -> np.ndarray:
    """One synthetic 299x299 uint8 tile with the lesion that ``label`` (0..4) calls for."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    img = _tissue(rng)
    _add_lesion(img, rng, label, 45.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` (0..7) of the dihedral group on the first two axes: a rotation by
    ``k % 4`` quarter turns, then a transpose when ``k >= 4``."""
    out = np.rot90(image, k % 4, axes=(0, 1))
    return np.swapaxes(out, 0, 1) if k >= 4 else out


def _view_params(seed: int, split: str, lesion: int, views: int) -> list[tuple[int, int, int]]:
    """(row offset, column offset, dihedral k) of each view of one lesion, all distinct (two
    identical views would be exact duplicates, which the data contract rejects)."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], _VIEW_STREAM, lesion])
    params: list[tuple[int, int, int]] = []
    while len(params) < views:
        oy, ox = (int(v) for v in rng.integers(0, VIEW_SHIFT + 1, size=2))
        candidate = (oy, ox, int(rng.integers(0, 8)))
        if candidate not in params:
            params.append(candidate)
    return params


def make_lesion_views(seed: int, split: str, lesion: int, label: int, views: int) -> np.ndarray:
    """``views`` tiles (views x 299 x 299 uint8) of one lesion region: crops at random offsets
    of a (299 + VIEW_SHIFT)-pixel region, each under a random dihedral transform."""
    if label not in (1, 2, 3, 4):
        raise ValueError(f"a lesion needs a positive label 1..4, got {label}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], _LESION_STREAM, lesion])
    region = _tissue(rng, S + VIEW_SHIFT)
    _add_lesion(region, rng, label, _VIEW_LESION_SPREAD)
    region_u8 = np.clip(region, 0, 255).astype(np.uint8)
    out = np.empty((views, S, S), dtype=np.uint8)
    for v, (oy, ox, k) in enumerate(_view_params(seed, split, lesion, views)):
        out[v] = dihedral(region_u8[oy : oy + S, ox : ox + S], k)
    return out


@dataclass(frozen=True)
class RecordPlan:
    """What each record of a split is: ``label``, and for positives the ``lesion`` it shows
    (-1 for negatives) and which ``view`` of it; ``views`` is each lesion's view count."""

    labels: np.ndarray
    lesions: np.ndarray
    view_index: np.ndarray
    views: dict[int, int]

    def tile(self, seed: int, split: str, index: int) -> np.ndarray:
        """The tile of record ``index``."""
        lesion = int(self.lesions[index])
        label = int(self.labels[index])
        if lesion < 0:
            return make_tile(seed, split, index, label)
        if self.views[lesion] == 1:  # single-view lesions are the original per-index tiles
            return make_tile(seed, split, index, label)
        return make_lesion_views(seed, split, lesion, label, self.views[lesion])[
            int(self.view_index[index])
        ]


def plan_records(
    n: int, positive_fraction: float, seed: int, split: str, views_per_lesion: int = 1
) -> RecordPlan:
    """Exactly round(n * positive_fraction) positives, grouped ``views_per_lesion`` to a
    lesion (the last lesion may have fewer views), lesion types 1..4 evenly over lesions,
    records shuffled (so views of one lesion spread over files)."""
    if views_per_lesion < 1:
        raise ValueError("views_per_lesion must be at least 1")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 1_000_003])
    n_pos = int(round(n * positive_fraction))
    lesions = np.full(n, -1, dtype=np.int64)
    lesions[:n_pos] = np.arange(n_pos) // views_per_lesion
    view_index = np.zeros(n, dtype=np.int64)
    view_index[:n_pos] = np.arange(n_pos) % views_per_lesion
    labels = np.zeros(n, dtype=np.int64)
    labels[:n_pos] = (lesions[:n_pos] % 4) + 1
    order = np.arange(n)
    rng.shuffle(order)  # the same draws as shuffling the labels in place
    ids, counts = np.unique(lesions[:n_pos], return_counts=True)
    return RecordPlan(
        labels=labels[order],
        lesions=lesions[order],
        view_index=view_index[order],
        views={int(i): int(c) for i, c in zip(ids, counts, strict=True)},
    )


def make_labels(
    n: int, positive_fraction: float, seed: int, split: str, views_per_lesion: int = 1
) -> np.ndarray:
    """The ``label`` of each record of :func:`plan_records` (lesion types 1..4 evenly)."""
    return plan_records(n, positive_fraction, seed, split, views_per_lesion).labels


class _TileSource:
    """Tiles of a plan in index order; each multi-view lesion region is rendered once and
    its views kept until all were used (views are spread over the split by the shuffle)."""

    def __init__(self, plan: RecordPlan, seed: int, split: str) -> None:
        self.plan, self.seed, self.split = plan, seed, split
        self._pending: dict[int, np.ndarray] = {}
        self._left = dict(plan.views)

    def tile(self, index: int) -> np.ndarray:
        lesion = int(self.plan.lesions[index])
        if lesion < 0 or self.plan.views[lesion] == 1:
            return self.plan.tile(self.seed, self.split, index)
        if lesion not in self._pending:
            label = int(self.plan.labels[index])
            views = self.plan.views[lesion]
            self._pending[lesion] = make_lesion_views(self.seed, self.split, lesion, label, views)
        tile = self._pending[lesion][int(self.plan.view_index[index])]
        self._left[lesion] -= 1
        if not self._left[lesion]:
            del self._pending[lesion]
        return tile


@dataclass
class SyntheticDataset:
    """What :func:`generate` wrote (also saved as ``synthetic_dataset.json``)."""

    synthetic: bool
    out_dir: str
    seed: int
    train_files: list[str]
    train_records: int
    train_label_counts: dict[str, int]
    test_data: str | None = None
    test_labels: str | None = None
    test_records: int = 0
    compression: str = ""
    positive_fraction: float = 0.14
    views_per_lesion: int = 1
    train_lesions: int = 0
    test_lesions: int = 0
    notes: list[str] = field(default_factory=list)
    film_set: str | None = None
    films: int = 0


def _label_counts(labels: np.ndarray) -> dict[str, int]:
    return {LABEL_NAMES[k]: int((labels == k).sum()) for k in LABEL_NAMES}


def generate(
    out_dir: Path | str,
    n: int,
    *,
    files: int = 5,
    positive_fraction: float = 0.14,
    seed: int = 0,
    test_n: int = 0,
    compression: Compression = "",
    views_per_lesion: int = 4,
    progress: bool = True,
    films: int = 0,
    films_dir: Path | str | None = None,
) -> SyntheticDataset:
    """Write ``n`` synthetic training records over ``files`` tfrecord files, plus an optional
    held-out test split of ``test_n`` tiles in the published numpy form, plus an optional
    SYNTHETIC film set of ``films`` whole films (:func:`~.film_set.make_film_set`) at
    ``films_dir`` (default ``<out_dir>/test_films``).

    Each positive lesion appears as ``views_per_lesion`` overlapping, flipped / rotated
    views (1: one independent tile per positive). The test split has its own lesions.
    """
    if n < 1 or files < 1 or files > n:
        raise ValueError("need n >= 1 and 1 <= files <= n")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError("positive_fraction must be within [0, 1]")
    if views_per_lesion < 1:
        raise ValueError("views_per_lesion must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_records(n, positive_fraction, seed, "train", views_per_lesion)
    source = _TileSource(plan, seed, "train")
    bar = tqdm(total=n + test_n, desc=f"{SYNTHETIC_TAG} tiles", unit="tile", disable=not progress)
    bounds = np.linspace(0, n, files + 1).astype(int)
    suffix = ".tfrecords.gz" if compression == "GZIP" else ".tfrecords"
    written = []
    for k in range(files):
        path = out / f"synthetic_train_{k:02d}-of-{files:02d}{suffix}"

        def records(lo: int = bounds[k], hi: int = bounds[k + 1]):
            for i in range(lo, hi):
                yield encode_tile(source.tile(i), int(plan.labels[i]))
                bar.update(1)

        write_records(path, records(), compression=compression)
        written.append(str(path))
    result = SyntheticDataset(
        synthetic=True,
        out_dir=str(out),
        seed=seed,
        train_files=written,
        train_records=n,
        train_label_counts=_label_counts(plan.labels),
        compression=compression,
        positive_fraction=positive_fraction,
        views_per_lesion=views_per_lesion,
        train_lesions=len(plan.views),
        notes=[
            "SYNTHETIC data made by mammo_pipeline.data.synthetic; not real mammograms.",
            f"Each positive lesion is written as up to {views_per_lesion} overlapping, "
            "flipped / rotated views (near-duplicates); split them by group.",
        ],
    )
    if test_n:
        test_plan = plan_records(test_n, positive_fraction, seed, "test", views_per_lesion)
        test_source = _TileSource(test_plan, seed, "test")
        data_path = out / "synthetic_test_data.npy"
        labels_path = out / "synthetic_test_labels.npy"
        data = np.lib.format.open_memmap(
            data_path, mode="w+", dtype=np.uint8, shape=(test_n, S, S, 1)
        )
        for i in range(test_n):
            data[i, :, :, 0] = test_source.tile(i)
            bar.update(1)
        data.flush()
        del data
        np.save(labels_path, test_plan.labels)
        for path in (data_path, labels_path):  # figures made from them say SYNTHETIC
            write_sidecar(path)
        result.test_data, result.test_labels, result.test_records = (
            str(data_path),
            str(labels_path),
            test_n,
        )
        result.test_lesions = len(test_plan.views)
    bar.close()
    if films:
        from mammo_pipeline.data.film_set import make_film_set

        film_dir = Path(films_dir) if films_dir is not None else out / "test_films"
        make_film_set(film_dir, films, seed=seed)
        result.film_set, result.films = str(film_dir), films
    (out / "synthetic_dataset.json").write_text(json.dumps(asdict(result), indent=2))
    return result
