"""Synthetic mammogram-like ROI tiles in the exact public DDSM schema.

The tiles are *synthetic*: low-frequency tissue density, fibrous streaks and sensor noise,
with positives carrying either a mass (benign: smooth oval; malignant: irregular and
spiculated) or a cluster of micro-calcifications (benign: few, round, coarse; malignant:
many, small, pleomorphic). A classifier can genuinely learn the task, which makes the
pipeline testable end to end without the real (licensed) data set.

Every tile is a pure function of (seed, split, index), so generation is deterministic and
independent of how records are split over files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.schema import LABEL_NAMES, SOURCE_SIZE
from mammo_pipeline.data.tfrecord_io import Compression, write_records

SYNTHETIC_TAG = "SYNTHETIC"
_SPLIT_IDS = {"train": 0, "test": 1, "cv": 2}
S = SOURCE_SIZE


def _upsampled_noise(rng: np.random.Generator, grid: tuple[int, int], size: int) -> np.ndarray:
    """Smooth noise: a small random grid resized bicubically to size x size (zero mean)."""
    small = rng.standard_normal(grid).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def _tissue(rng: np.random.Generator) -> np.ndarray:
    """Background: density variation at three scales, a fibrous texture and a skin falloff."""
    img = (
        22.0 * _upsampled_noise(rng, (3, 3), S)
        + 12.0 * _upsampled_noise(rng, (9, 9), S)
        + 5.0 * _upsampled_noise(rng, (28, 28), S)
    )
    # Fibrous streaks: anisotropic noise rotated to a random orientation.
    big = int(S * 1.5)
    streak = rng.standard_normal((6, 48)).astype(np.float32)
    streak_img = Image.fromarray(streak, mode="F").resize((big, big), Image.Resampling.BICUBIC)
    streak_img = streak_img.rotate(float(rng.uniform(0, 180)), Image.Resampling.BILINEAR)
    off = (big - S) // 2
    img += 7.0 * np.asarray(streak_img, dtype=np.float32)[off : off + S, off : off + S]
    # Density falloff towards one edge, as near the skin line.
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)
    img += float(rng.uniform(0, 30)) * ramp
    img += float(rng.uniform(95, 150))
    img += rng.normal(0.0, 3.0, size=(S, S)).astype(np.float32)
    return img


def _add_mass(img: np.ndarray, rng: np.random.Generator, malignant: bool) -> None:
    # ROI tiles of the public set are cropped around the abnormality: lesions sit near the
    # centre and are large relative to the tile.
    r0 = float(rng.uniform(18, 42))
    cy, cx = S / 2 + rng.uniform(-45, 45, size=2)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
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
        mask = Image.new("L", (S, S), 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(int(rng.integers(7, 15))):
            a = rng.uniform(0, 2 * np.pi)
            length = r0 * rng.uniform(1.6, 2.8)
            x0, y0 = cx + 0.7 * r0 * np.cos(a), cy + 0.7 * r0 * np.sin(a)
            x1, y1 = cx + length * np.cos(a), cy + length * np.sin(a)
            draw.line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(1, 3)))
        spic = np.asarray(mask.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32) / 255
        img += 0.7 * amplitude * spic


def _add_calcifications(img: np.ndarray, rng: np.random.Generator, malignant: bool) -> None:
    n = int(rng.integers(12, 30)) if malignant else int(rng.integers(6, 12))
    spread = float(rng.uniform(10, 20)) if malignant else float(rng.uniform(14, 28))
    cy, cx = S / 2 + rng.uniform(-45, 45, size=2)
    for _ in range(n):
        py, px = cy + rng.normal(0, spread), cx + rng.normal(0, spread)
        if malignant:  # small, varied, sometimes elongated
            sy, sx = rng.uniform(0.9, 1.8), rng.uniform(0.9, 2.8)
        else:  # coarse and round
            sy = sx = rng.uniform(1.8, 3.0)
        y0, y1 = int(max(py - 8, 0)), int(min(py + 9, S))
        x0, x1 = int(max(px - 8, 0)), int(min(px + 9, S))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        spot = np.exp(-(((yy - py) / sy) ** 2 + ((xx - px) / sx) ** 2) / 2)
        img[y0:y1, x0:x1] += float(rng.uniform(80, 130)) * spot


def make_tile(seed: int, split: str, index: int, label: int) -> np.ndarray:
    """One synthetic 299x299 uint8 tile with the lesion that ``label`` (0..4) calls for."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    img = _tissue(rng)
    if label in (2, 4):
        _add_mass(img, rng, malignant=label == 4)
    elif label in (1, 3):
        _add_calcifications(img, rng, malignant=label == 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_labels(n: int, positive_fraction: float, seed: int, split: str) -> np.ndarray:
    """Exactly round(n * positive_fraction) positives, lesion types 1..4 evenly, shuffled."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 1_000_003])
    n_pos = int(round(n * positive_fraction))
    labels = np.zeros(n, dtype=np.int64)
    labels[:n_pos] = (np.arange(n_pos) % 4) + 1
    rng.shuffle(labels)
    return labels


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
    notes: list[str] = field(default_factory=list)


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
    progress: bool = True,
) -> SyntheticDataset:
    """Write ``n`` synthetic training records over ``files`` tfrecord files, plus an optional
    held-out test split of ``test_n`` tiles in the published numpy form."""
    if n < 1 or files < 1 or files > n:
        raise ValueError("need n >= 1 and 1 <= files <= n")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError("positive_fraction must be within [0, 1]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = make_labels(n, positive_fraction, seed, "train")
    bar = tqdm(total=n + test_n, desc=f"{SYNTHETIC_TAG} tiles", unit="tile", disable=not progress)
    bounds = np.linspace(0, n, files + 1).astype(int)
    suffix = ".tfrecords.gz" if compression == "GZIP" else ".tfrecords"
    written = []
    for k in range(files):
        path = out / f"synthetic_train_{k:02d}-of-{files:02d}{suffix}"

        def records(lo: int = bounds[k], hi: int = bounds[k + 1]):
            for i in range(lo, hi):
                yield encode_tile(make_tile(seed, "train", i, int(labels[i])), int(labels[i]))
                bar.update(1)

        write_records(path, records(), compression=compression)
        written.append(str(path))
    result = SyntheticDataset(
        synthetic=True,
        out_dir=str(out),
        seed=seed,
        train_files=written,
        train_records=n,
        train_label_counts=_label_counts(labels),
        compression=compression,
        positive_fraction=positive_fraction,
        notes=[
            "SYNTHETIC data made by mammo_pipeline.data.synthetic; not real mammograms.",
        ],
    )
    if test_n:
        test_labels = make_labels(test_n, positive_fraction, seed, "test")
        data_path = out / "synthetic_test_data.npy"
        labels_path = out / "synthetic_test_labels.npy"
        data = np.lib.format.open_memmap(
            data_path, mode="w+", dtype=np.uint8, shape=(test_n, S, S, 1)
        )
        for i in range(test_n):
            data[i, :, :, 0] = make_tile(seed, "test", i, int(test_labels[i]))
            bar.update(1)
        data.flush()
        del data
        np.save(labels_path, test_labels)
        result.test_data, result.test_labels, result.test_records = (
            str(data_path),
            str(labels_path),
            test_n,
        )
    bar.close()
    (out / "synthetic_dataset.json").write_text(json.dumps(asdict(result), indent=2))
    return result
