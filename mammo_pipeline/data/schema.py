"""The data contract of the public DDSM / CBIS-DDSM tfrecords, in one place.

See docs/architecture.md ("Data contract"). Every other module imports these names instead of
repeating keys, sizes or label meanings.
"""

from __future__ import annotations

from typing import Final

from mammo_pipeline.imaging.preprocess import TILE_MM_PER_PX as TILE_MM_PER_PX
from mammo_pipeline.imaging.preprocess import TILE_SIZE

IMAGE_KEY: Final = "image"
LABEL_KEY: Final = "label"
LABEL_NORMAL_KEY: Final = "label_normal"

#: The tiles are SOURCE_SIZE x SOURCE_SIZE pixels at TILE_MM_PER_PX mm per pixel (a tile
#: covers 29.9 mm). Both are defined once, in ``imaging.preprocess`` (the one preprocessing
#: path: importers cut at this scale and whole-film analysis resamples to it).
SOURCE_SIZE: Final = TILE_SIZE
CHANNELS: Final = 1
IMAGE_BYTES: Final = SOURCE_SIZE * SOURCE_SIZE * CHANNELS  # 89,401 raw uint8 bytes

LABEL_NAMES: Final[dict[int, str]] = {
    0: "negative",
    1: "benign calcification",
    2: "benign mass",
    3: "malignant calcification",
    4: "malignant mass",
}
LABEL_VALUES: Final = tuple(LABEL_NAMES)
LABEL_NORMAL_NAMES: Final[dict[int, str]] = {0: "negative", 1: "positive"}

TFRECORD_SUFFIXES: Final = (".tfrecords", ".tfrecord", ".tfrec")
NPY_DATA_SUFFIX: Final = "_data.npy"
NPY_LABELS_SUFFIX: Final = "_labels.npy"
GZIP_MAGIC: Final = b"\x1f\x8b"


def label_normal_of(label: int) -> int:
    """The binary target implied by a 5-class label: positive for any lesion."""
    return int(label > 0)


def is_tfrecord_path(name: str) -> bool:
    return name.endswith(TFRECORD_SUFFIXES) or name.endswith(
        tuple(s + ".gz" for s in TFRECORD_SUFFIXES)
    )
