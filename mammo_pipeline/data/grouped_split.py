"""Leak-free train/validation assignment: whole near-duplicate groups go to one side.

The public ROI tiles hold several crops, flips and rotations of every lesion region, so a
per-tile split (the old rule, :func:`legacy_validation_masks`) puts near-copies of one region
on both sides: early stopping and the decision threshold are then tuned on leaked data.
:func:`assign_validation` hashes every tile (:mod:`.near_duplicates`), joins near-duplicates
into groups (union-find) and sends each group as a whole to train or validation.

**Which side.** A group's key is its smallest canonical tile hash, and it is positive when
any of its tiles is. The split is stratified by class (:mod:`.group_sides`): each class sends
``val_fraction`` of its groups (to within half a group) to validation, chosen by a seeded
sha256 of their keys, and validation holds a positive group whenever there are two. The
sides depend only on the groups and the seed, not on the order of files; adding ``m`` groups
moves at most ``m`` existing groups across, besides groups whose key changes (a new tile
with a smaller hash than any member, or one that bridges two groups into one). A group may
change side; it is never split.

**Leakage** is the number of validation positives that have a near-copy (distance within
the threshold) on the train side. The group split has none by construction (its figure is
measured, not assumed); :func:`legacy_leakage` measures the old per-tile rule for the
before/after comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.data.group_sides import stratified_sides
from mammo_pipeline.data.near_duplicates import (
    DEFAULT_MAX_DISTANCE,
    HASH_VERSION,
    Pairs,
    close_pairs,
    hash_tfrecord,
    tile_key,
    union_find_groups,
)
from mammo_pipeline.data.tfrecord_io import iter_records
from mammo_pipeline.errors import DataError


@dataclass(frozen=True)
class FileStamp:
    """Identifies the version of a file an assignment was made for (cheap to re-check)."""

    path: str
    size_bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path | str) -> FileStamp:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as exc:
            raise DataError(p, f"cannot read file ({exc.strerror or exc})") from exc
        return cls(str(p.resolve()), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class CorpusHashes:
    """Perceptual hashes and labels of every record of ``files`` (concatenated in order)."""

    files: tuple[str, ...]
    offsets: np.ndarray  # (files + 1,): records of file i are offsets[i]:offsets[i + 1]
    hashes: np.ndarray  # (N, ANCHORS, 2) uint64
    labels: np.ndarray  # (N,) int64

    @property
    def positives(self) -> np.ndarray:
        return self.labels > 0


def hash_files(files: Sequence[Path | str], *, progress: bool = True) -> CorpusHashes:
    """Hash every record of ``files`` (streamed, one file at a time)."""
    if not files:
        raise DataError(None, "no tfrecord files given to the grouped split")
    parts = [hash_tfrecord(f, progress=progress) for f in files]
    sizes = [len(p) for p in parts]
    return CorpusHashes(
        files=tuple(str(f) for f in files),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        hashes=np.concatenate([p.hashes for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
    )


def leakage(pairs: Pairs, is_validation: np.ndarray, positives: np.ndarray) -> int:
    """Validation positives with a near-copy on the train side, from the near-duplicate
    ``pairs`` (self-join) of the same records."""
    crossing = is_validation[pairs.left] != is_validation[pairs.right]
    val_side = np.where(is_validation[pairs.left], pairs.left, pairs.right)[crossing]
    leaked = np.unique(val_side)
    return int(positives[leaked].sum())


@dataclass(frozen=True, eq=False)
class SplitAssignment:
    """Per file, a boolean per record (file order): True = validation.

    Made per near-duplicate group (see the module docstring), with the figures of the
    split. ``stamps`` identify the file versions it was made for.
    """

    files: tuple[str, ...]
    stamps: tuple[FileStamp, ...]
    validation: tuple[np.ndarray, ...]
    val_fraction: float
    seed: int
    max_distance: int
    records: int
    positives: int
    groups: int
    validation_records: int
    validation_positives: int
    validation_groups: int
    leakage: int
    positive_groups: int = 0
    validation_positive_groups: int = 0
    hash_version: str = HASH_VERSION
    _by_path: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_path.update({s.path: i for i, s in enumerate(self.stamps)})

    def mask(self, path: Path | str) -> np.ndarray:
        """The validation mask of one file; DataError if it is not part of the split."""
        resolved = str(Path(path).resolve())
        if resolved not in self._by_path:
            raise DataError(path, "not among the files the train/validation split was made for")
        return self.validation[self._by_path[resolved]]

    def check_files(self, files: Sequence[Path | str]) -> None:
        """DataError unless ``files`` are exactly this split's files, unchanged since."""
        given = {str(Path(f).resolve()) for f in files}
        missing = sorted(set(self._by_path) - given)
        extra = sorted(given - set(self._by_path))
        if extra:
            raise DataError(extra[0], "not among the files the train/validation split was made for")
        if missing:
            raise DataError(missing[0], "in the train/validation split but not given")
        for stamp in self.stamps:
            now = FileStamp.of(stamp.path)
            if (now.size_bytes, now.mtime_ns) != (stamp.size_bytes, stamp.mtime_ns):
                raise DataError(stamp.path, "changed since the train/validation split was made")

    def summary(self) -> dict[str, Any]:
        """The figures (JSON-friendly), e.g. for MLflow params / a run artefact."""
        return {
            "split": "near-duplicate groups, stratified by class",
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "max_distance": self.max_distance,
            "hash_version": self.hash_version,
            "records": self.records,
            "positives": self.positives,
            "groups": self.groups,
            "validation_records": self.validation_records,
            "validation_positives": self.validation_positives,
            "validation_groups": self.validation_groups,
            "positive_groups": self.positive_groups,
            "validation_positive_groups": self.validation_positive_groups,
            "leakage": self.leakage,
        }


def assign_validation(
    files: Sequence[Path | str],
    val_fraction: float,
    seed: int,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    *,
    progress: bool = True,
) -> SplitAssignment:
    """Assign every record of ``files`` to train or validation, one near-duplicate group at
    a time. Raises :class:`DataError` naming the file and record of an unreadable tile."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within (0, 1), got {val_fraction}")
    stamps = tuple(FileStamp.of(f) for f in files)
    if len({s.path for s in stamps}) != len(stamps):
        raise DataError(None, "the same file is given twice to the train/validation split")
    corpus = hash_files(files, progress=progress)
    n = corpus.hashes.shape[0]
    if n == 0:
        raise DataError(None, "the files given to the train/validation split hold no records")
    pairs = close_pairs(corpus.hashes, None, max_distance)
    group_of = union_find_groups(n, pairs.left, pairs.right)
    roots, inverse = np.unique(group_of, return_inverse=True)
    keys = tile_key(corpus.hashes)
    # The smallest key of each group (lexicographic over the two words).
    order = np.lexsort((keys[:, 1], keys[:, 0], inverse))
    first_of_group = order[np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]]
    positives = corpus.positives
    group_positive = np.bincount(inverse, weights=positives, minlength=roots.size) > 0
    group_is_val = stratified_sides(keys[first_of_group], group_positive, val_fraction, seed)
    is_val = group_is_val[inverse]
    off = corpus.offsets
    return SplitAssignment(
        files=corpus.files,
        stamps=stamps,
        validation=tuple(is_val[off[i] : off[i + 1]].copy() for i in range(len(files))),
        val_fraction=val_fraction,
        seed=seed,
        max_distance=max_distance,
        records=n,
        positives=int(positives.sum()),
        groups=int(roots.size),
        validation_records=int(is_val.sum()),
        validation_positives=int((is_val & positives).sum()),
        validation_groups=int(group_is_val.sum()),
        leakage=leakage(pairs, is_val, positives),
        positive_groups=int(group_positive.sum()),
        validation_positive_groups=int((group_is_val & group_positive).sum()),
    )


# --- the old per-tile rule, reproduced without TensorFlow ------------------------------------

#: Hash buckets of the old rule (``data.pipeline.SPLIT_BUCKETS``).
LEGACY_BUCKETS = 1000
_M64 = (1 << 64) - 1
_K0 = 0xC3A5C85C97CB3127
_K1 = 0xB492B66FBE98F273
_K2 = 0x9AE16A3B2F90404F


def _u64(value: int, like: np.ndarray) -> np.ndarray:
    return np.full(like.shape, value & _M64, dtype=np.uint64)


def _rotate(v: np.ndarray, shift: int) -> np.ndarray:
    return (v >> np.uint64(shift)) | (v << np.uint64(64 - shift))


def _shift_mix(v: np.ndarray) -> np.ndarray:
    return v ^ (v >> np.uint64(47))


def _hash_len16(u: np.ndarray, v: np.ndarray, mul: np.ndarray) -> np.ndarray:
    a = (u ^ v) * mul
    a ^= a >> np.uint64(47)
    b = (v ^ a) * mul
    b ^= b >> np.uint64(47)
    return b * mul


def _weak_hash32(words: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FarmHash's WeakHashLen32WithSeeds on four little-endian words (..., 4)."""
    w, x, y, z = words[:, 0], words[:, 1], words[:, 2], words[:, 3]
    a = a + w
    b = _rotate(b + a + z, 21)
    c = a
    a = a + x + y
    b = b + _rotate(a, 44)
    return a + z, b + c


def fingerprint64(data: np.ndarray) -> np.ndarray:
    """FarmHash Fingerprint64 (farmhashna::Hash64) of each row of ``data`` ((B, L) uint8,
    L > 64, all rows the same length), vectorised over rows. This is the hash behind
    TensorFlow's ``tf.strings.to_hash_bucket_fast`` (checked against it in the tests)."""
    b, length = data.shape
    if length <= 64:
        raise ValueError("fingerprint64 here handles strings longer than 64 bytes only")
    blocks = (length - 1) // 64
    body = np.ascontiguousarray(data[:, : blocks * 64]).view("<u8").reshape(b, blocks, 8)
    last = np.ascontiguousarray(data[:, length - 64 :]).view("<u8").astype(np.uint64)
    body = body.astype(np.uint64)
    k1 = np.uint64(_K1)
    zero = np.zeros(b, dtype=np.uint64)
    x = _u64(81, zero)
    y = _u64(81 * _K1 + 113, zero)
    z = _shift_mix(y * np.uint64(_K2) + np.uint64(113)) * np.uint64(_K2)
    v0, v1, w0, w1 = zero.copy(), zero.copy(), zero.copy(), zero.copy()
    with np.errstate(over="ignore"):
        x = x * np.uint64(_K2) + body[:, 0, 0]
        for i in range(blocks):
            s = body[:, i]
            x = _rotate(x + y + v0 + s[:, 1], 37) * k1
            y = _rotate(y + v1 + s[:, 6], 42) * k1
            x ^= w1
            y = y + v0 + s[:, 5]
            z = _rotate(z + w0, 33) * k1
            v0, v1 = _weak_hash32(s[:, 0:4], v1 * k1, x + w0)
            w0, w1 = _weak_hash32(s[:, 4:8], z + w1, y + s[:, 2])
            z, x = x, z
        mul = k1 + ((z & np.uint64(0xFF)) << np.uint64(1))
        w0 = w0 + np.uint64((length - 1) & 63)
        v0 = v0 + w0
        w0 = w0 + v0
        x = _rotate(x + y + v0 + last[:, 1], 37) * mul
        y = _rotate(y + v1 + last[:, 6], 42) * mul
        x ^= w1 * np.uint64(9)
        y = y + v0 * np.uint64(9) + last[:, 5]
        z = _rotate(z + w0, 33) * mul
        v0, v1 = _weak_hash32(last[:, 0:4], v1 * mul, x + w0)
        w0, w1 = _weak_hash32(last[:, 4:8], z + w1, y + last[:, 2])
        z, x = x, z
        return _hash_len16(
            _hash_len16(v0, w0, mul) + _shift_mix(y) * np.uint64(_K0) + z,
            _hash_len16(v1, w1, mul) + x,
            mul,
        )


def _legacy_buckets(path: Path | str, batch_size: int) -> np.ndarray:
    """``Fingerprint64(image bytes) % 1000`` of every record of a file, in order."""
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.schema import IMAGE_BYTES

    buckets: list[np.ndarray] = []
    batch: list[bytes] = []
    records = iter_records(path)
    for index, raw in enumerate(records):
        image = decode_tile(raw).image
        if image is None or len(image) != IMAGE_BYTES:
            raise DataError(path, f"record {index}: image is not {IMAGE_BYTES} raw bytes")
        batch.append(image)
        if len(batch) == batch_size:
            rows = np.frombuffer(b"".join(batch), dtype=np.uint8).reshape(len(batch), -1)
            buckets.append(fingerprint64(rows) % np.uint64(LEGACY_BUCKETS))
            batch = []
    if batch:
        rows = np.frombuffer(b"".join(batch), dtype=np.uint8).reshape(len(batch), -1)
        buckets.append(fingerprint64(rows) % np.uint64(LEGACY_BUCKETS))
    return np.concatenate(buckets) if buckets else np.zeros(0, np.uint64)


def legacy_validation_masks(
    files: Sequence[Path | str], val_fraction: float, *, batch_size: int = 512
) -> list[np.ndarray]:
    """The old per-tile rule of ``data.pipeline.in_subset``: a record is validation when
    ``Fingerprint64(image bytes) % 1000 < round(val_fraction * 1000)``; per file, in order."""
    cut = np.uint64(int(round(val_fraction * LEGACY_BUCKETS)))
    return [_legacy_buckets(f, batch_size) < cut for f in files]


@dataclass(frozen=True)
class LeakageReport:
    """Figures of one train/validation rule on one set of files."""

    rule: str
    records: int
    positives: int
    validation_records: int
    validation_positives: int
    leakage: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def legacy_leakage(
    files: Sequence[Path | str],
    val_fraction: float,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    *,
    corpus: CorpusHashes | None = None,
    progress: bool = True,
) -> LeakageReport:
    """Leakage of the old per-tile split on ``files`` (pass ``corpus`` to reuse hashes)."""
    corpus = corpus or hash_files(files, progress=progress)
    is_val = np.concatenate(legacy_validation_masks(files, val_fraction))
    if is_val.size != corpus.labels.size:
        raise DataError(None, "files changed while measuring the old split's leakage")
    pairs = close_pairs(corpus.hashes, None, max_distance)
    positives = corpus.positives
    return LeakageReport(
        rule="per-tile content hash (old)",
        records=int(is_val.size),
        positives=int(positives.sum()),
        validation_records=int(is_val.sum()),
        validation_positives=int((is_val & positives).sum()),
        leakage=leakage(pairs, is_val, positives),
    )


def group_leakage_report(split: SplitAssignment) -> LeakageReport:
    """The group split's figures in the same form as :func:`legacy_leakage`."""
    return LeakageReport(
        rule="near-duplicate groups",
        records=split.records,
        positives=split.positives,
        validation_records=split.validation_records,
        validation_positives=split.validation_positives,
        leakage=split.leakage,
    )
