"""The published numpy form of the cv / test splits, and its conversion to tfrecords.

The public data set ships ``<split>_data.npy`` (N x 299 x 299 x 1 uint8) with
``<split>_labels.npy`` holding the 5-class ``label``. Arrays are memory-mapped, so
converting a split never loads it whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.schema import (
    LABEL_VALUES,
    NPY_DATA_SUFFIX,
    NPY_LABELS_SUFFIX,
    SOURCE_SIZE,
    label_normal_of,
)
from mammo_pipeline.data.tfrecord_io import Compression, write_records
from mammo_pipeline.errors import DataError


@dataclass(frozen=True)
class NumpySplit:
    """A memory-mapped split: ``images`` is (N, 299, 299, 1) uint8, ``labels`` is (N,) int."""

    name: str
    data_path: Path
    labels_path: Path
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def label_normal(self) -> np.ndarray:
        return (self.labels > 0).astype(np.int64)

    def iter_tiles(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield np.asarray(self.images[i]), int(self.labels[i])


def labels_path_for(data_path: Path) -> Path:
    if not data_path.name.endswith(NPY_DATA_SUFFIX):
        raise DataError(data_path, f"expected a file named <split>{NPY_DATA_SUFFIX}")
    return data_path.with_name(data_path.name[: -len(NPY_DATA_SUFFIX)] + NPY_LABELS_SUFFIX)


def load_split(data_path: Path | str, labels_path: Path | str | None = None) -> NumpySplit:
    """Open and check a split; raises :class:`DataError` naming the file and the problem."""
    data_path = Path(data_path)
    labels_p = Path(labels_path) if labels_path else labels_path_for(data_path)
    for p in (data_path, labels_p):
        if not p.is_file():
            raise DataError(p, "no such file")
    try:
        images = np.load(data_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(data_path, f"not a readable .npy array ({exc})") from exc
    if images.dtype != np.uint8:
        raise DataError(data_path, f"images must be uint8, found {images.dtype}")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE, 1):
        raise DataError(
            data_path, f"images must be N x {SOURCE_SIZE} x {SOURCE_SIZE} x 1, found {images.shape}"
        )
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(labels_p, f"labels must be integers, found {labels.dtype}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            labels_p, f"{labels.shape[0]} labels for {images.shape[0]} images in {data_path.name}"
        )
    bad = np.setdiff1d(np.unique(labels), LABEL_VALUES)
    if bad.size:
        raise DataError(labels_p, f"labels outside 0..4: {bad.tolist()}")
    name = data_path.name[: -len(NPY_DATA_SUFFIX)]
    return NumpySplit(name, data_path, labels_p, images, labels.astype(np.int64))


def find_splits(directory: Path | str) -> list[Path]:
    """The ``*_data.npy`` files of a directory, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "no such directory")
    return sorted(directory.glob(f"*{NPY_DATA_SUFFIX}"))


#: The public DDSM release's numpy splits that together form the held-out TEST set: they are
#: the two halves of the original CBIS-DDSM test split (one calcification cases, the other
#: mass cases). Neither is training data.
PUBLIC_HELD_OUT_SPLITS = ("cv10", "test10")


def is_public_held_out(name: str) -> bool:
    """Whether a split (or file) name is one of the public held-out halves."""
    stem = Path(name).name.removesuffix(NPY_DATA_SUFFIX).removesuffix(NPY_LABELS_SUFFIX)
    return stem in PUBLIC_HELD_OUT_SPLITS


def split_to_tfrecords(
    split: NumpySplit,
    out_path: Path | str,
    *,
    compression: Compression = "",
    allow_held_out: bool = False,
) -> int:
    """Write a numpy split in the public tfrecord schema; returns the record count.

    Refuses the public held-out halves (``cv10``, ``test10``) unless ``allow_held_out``:
    converting them usually means training on the test set."""
    if is_public_held_out(split.name) and not allow_held_out:
        raise DataError(
            split.data_path,
            f"'{split.name}' is half of the public held-out test set (cv10 + test10 together): "
            "keep it in the test directory, never train on it (allow_held_out=True to convert "
            "it anyway)",
        )
    return write_records(
        out_path,
        (encode_tile(img, lab, label_normal_of(lab)) for img, lab in split.iter_tiles()),
        compression=compression,
    )
