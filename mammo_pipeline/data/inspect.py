"""Summaries of data files: record counts, class counts, schema problems, sample grids.

Counting never decodes images: records are parsed only for their labels and the image's
byte length, so inspecting a 5 GB split streams it in constant memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mammo_pipeline.data.example_codec import ExampleDecodeError, decode_tile
from mammo_pipeline.data.numpy_split import find_splits, load_split
from mammo_pipeline.data.schema import (
    IMAGE_BYTES,
    LABEL_NAMES,
    LABEL_VALUES,
    NPY_DATA_SUFFIX,
    is_tfrecord_path,
)
from mammo_pipeline.data.tfrecord_io import detect_compression, iter_records
from mammo_pipeline.errors import CorruptRecordError, DataError

#: At most this many individual problems are listed per file (all are counted).
MAX_LISTED_PROBLEMS = 20


@dataclass
class FileSummary:
    path: str
    kind: str  # "tfrecord" or "numpy"
    records: int = 0
    compression: str = ""
    label_counts: dict[int, int] = field(default_factory=dict)
    label_normal_counts: dict[int, int] = field(default_factory=dict)
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(text)

    @property
    def positive_fraction(self) -> float:
        return self.label_normal_counts.get(1, 0) / self.records if self.records else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["positive_fraction"] = round(self.positive_fraction, 4)
        return d


def summarize_tfrecord(path: Path) -> FileSummary:
    summary = FileSummary(str(path), "tfrecord")
    if path.stat().st_size == 0:
        summary.add_problem("empty file (0 bytes)")
        return summary
    summary.compression = detect_compression(path) or "none"
    labels: Counter[int] = Counter()
    normals: Counter[int] = Counter()
    try:
        for i, raw in enumerate(iter_records(path)):
            summary.records += 1
            try:
                tile = decode_tile(raw)
            except ExampleDecodeError as exc:
                summary.add_problem(f"record {i}: not a tf.train.Example ({exc})")
                continue
            if tile.image is None:
                summary.add_problem(f"record {i}: missing 'image' bytes")
            elif len(tile.image) != IMAGE_BYTES:
                summary.add_problem(
                    f"record {i}: image has {len(tile.image)} bytes, expected {IMAGE_BYTES}"
                )
            if tile.label is None or tile.label_normal is None:
                summary.add_problem(f"record {i}: missing 'label' or 'label_normal'")
                continue
            labels[tile.label] += 1
            normals[tile.label_normal] += 1
            if tile.label not in LABEL_VALUES:
                summary.add_problem(f"record {i}: label {tile.label} outside 0..4")
            if tile.label_normal not in (0, 1):
                summary.add_problem(f"record {i}: label_normal {tile.label_normal} not 0/1")
            elif tile.label_normal != int(tile.label > 0):
                summary.add_problem(
                    f"record {i}: label_normal {tile.label_normal} inconsistent with "
                    f"label {tile.label}"
                )
    except CorruptRecordError as exc:
        summary.add_problem(exc.problem)
    summary.label_counts = dict(sorted(labels.items()))
    summary.label_normal_counts = dict(sorted(normals.items()))
    return summary


def summarize_numpy(data_path: Path) -> FileSummary:
    split = load_split(data_path)
    labels = split.labels
    return FileSummary(
        str(data_path),
        "numpy",
        records=len(split),
        compression="none",
        label_counts={
            int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=False)
        },
        label_normal_counts={
            int(k): int(v)
            for k, v in zip(*np.unique(split.label_normal, return_counts=True), strict=False)
        },
    )


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given, directories expanded to their tfrecord and ``*_data.npy`` files."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.is_file() and is_tfrecord_path(q.name)
            ) + find_splits(p)
            if not found:
                raise DataError(p, "directory holds no tfrecord or *_data.npy files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(p, "no such file or directory")
    return out


def summarize(path: Path) -> FileSummary:
    """Summary of one file; raises :class:`DataError` for a file of unknown kind."""
    if path.name.endswith(NPY_DATA_SUFFIX):
        return summarize_numpy(path)
    if path.suffix == ".npy":
        raise DataError(path, f"numpy files must be named <split>{NPY_DATA_SUFFIX}")
    return summarize_tfrecord(path)


def sample_tiles(path: Path, n: int) -> list[tuple[np.ndarray, int]]:
    """Up to ``n`` (pixels, label) pairs from the start of a file, skipping malformed ones."""
    out: list[tuple[np.ndarray, int]] = []
    if path.name.endswith(NPY_DATA_SUFFIX):
        split = load_split(path)
        for i in range(min(n, len(split))):
            out.append((np.asarray(split.images[i, :, :, 0]), int(split.labels[i])))
        return out
    try:
        for raw in iter_records(path):
            try:
                tile = decode_tile(raw)
            except ExampleDecodeError:
                continue
            if tile.image_ok and tile.label is not None:
                out.append((tile.pixels(), tile.label))
            if len(out) >= n:
                break
    except CorruptRecordError:
        pass
    return out


def write_grid(paths: list[Path], out_png: Path, n: int = 16) -> Path:
    """A labelled grid of sample tiles, preferring one row per lesion type when available."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pool: list[tuple[np.ndarray, int]] = []
    for p in paths:
        pool.extend(sample_tiles(p, 4 * n))
    if not pool:
        raise DataError(paths[0] if paths else None, "no readable tiles to draw")
    by_label: dict[int, list[np.ndarray]] = {}
    for pix, lab in pool:
        by_label.setdefault(lab, []).append(pix)
    chosen: list[tuple[np.ndarray, int]] = []
    while len(chosen) < n and any(by_label.values()):  # round-robin over classes
        for lab in sorted(by_label):
            if by_label[lab] and len(chosen) < n:
                chosen.append((by_label[lab].pop(0), lab))
    cols = min(4, len(chosen))
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (pix, lab) in zip(axes.flat, chosen, strict=False):
        ax.imshow(pix, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{lab}: {LABEL_NAMES.get(lab, '?')}", fontsize=9)
    synthetic = any("synthetic" in p.name.lower() for p in paths)
    title = "Sample tiles" + (" (SYNTHETIC data)" if synthetic else "")
    fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
