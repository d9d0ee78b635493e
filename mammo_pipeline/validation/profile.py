"""Stream a tfrecord file into a profile: one row of small numbers per record + file facts.

Pixels are never kept: each record's 89,401-byte image is summarised in one numpy pass
(mean, std, min, max, fraction of saturated and of zero pixels), a content hash, a
flip/rotation-invariant perceptual hash and the ring spectra the held-out-test guard compares
(both computed for batches of 64 tiles; the spectra, 2.3 kB a tile, are kept beside the rows
in :attr:`FileProfile.rings`, not as a column), then dropped, so memory does not grow with
the file size beyond the small per-record rows and spectra.

A record that does not parse still gets a row (``parse_ok`` False, NaN statistics), and a
broken framing (bad CRC, truncation, a gzip stream that does not decompress, random bytes)
ends the stream with one extra row (``framing_ok`` False, ``parse_ok`` unknown) carrying the
index of the bad record and the problem, so the expectation suite reports it like any other
rule. The rules themselves are in the suite, not here: this module only measures.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammo_pipeline.data.example_codec import ExampleDecodeError, decode_tile
from mammo_pipeline.data.near_duplicates import from_hex, perceptual_hashes, to_hex
from mammo_pipeline.data.ring_descriptors import HARMONICS, RINGS, ring_spectra
from mammo_pipeline.data.schema import IMAGE_BYTES, SOURCE_SIZE, is_tfrecord_path
from mammo_pipeline.data.tfrecord_io import detect_compression, file_sha256, iter_records
from mammo_pipeline.errors import CorruptRecordError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from mammo_pipeline.validation.test_guard import TestGuard

#: The columns of a record profile, in order (the run adds ``seen_before``, from the
#: content-hash index of already validated data, and ``near_test_copy``, from the index of
#: held-out test tiles, see :func:`add_test_copy_column`).
RECORD_COLUMNS: tuple[str, ...] = (
    "record_index",
    "framing_ok",
    "parse_ok",
    "problem",
    "image_bytes",
    "label",
    "label_normal",
    "pixel_mean",
    "pixel_std",
    "pixel_min",
    "pixel_max",
    "saturated_fraction",
    "zero_fraction",
    "content_hash",
    "perceptual_hash",
)
_NAN = math.nan
#: Tiles hashed together (perceptual hashes are computed per batch: constant memory).
_HASH_BATCH = 64


@dataclass(frozen=True, slots=True)
class FileFacts:
    """File-level facts of one profiled file."""

    path: str
    name: str
    size_bytes: int
    sha256: str
    compression: str
    record_count: int  # records read before the end or the first framing error
    crc_ok: bool  # every record's framing and checksums were valid
    framing_error: str | None  # the problem, when crc_ok is False
    framing_error_index: int | None  # index of the bad record, when crc_ok is False
    parse_errors: int  # records that are not a tf.train.Example
    tfrecord_name: bool  # the file name has a tfrecord suffix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class FileProfile:
    """The profile of one file: ``records`` has one row per record (see RECORD_COLUMNS);
    ``rings`` the ring spectra of each row's tile ((rows, RINGS, HARMONICS) complex64, zeros
    where the row has no perceptual hash), or None when not computed."""

    facts: FileFacts
    records: pd.DataFrame
    rings: np.ndarray | None = None


def pixel_stats(image: bytes) -> tuple[float, float, float, float, float, float]:
    """(mean, std, min, max, saturated fraction, zero fraction) of raw uint8 pixels.

    One cheap pass each: an exact integer sum for the mean, a float32 dot product of the
    centred values for the variance, and counts of non-zero bytes of the pixels and of their
    complement for the zero and saturated fractions (no temporary boolean arrays).
    """
    a = np.frombuffer(image, dtype=np.uint8)
    n = a.size
    mean = int(a.sum(dtype=np.uint32)) / n
    centred = a.astype(np.float32)
    centred -= np.float32(mean)
    std = math.sqrt(max(float(np.dot(centred, centred)) / n, 0.0))
    return (
        mean,
        std,
        float(a.min()),
        float(a.max()),
        (n - np.count_nonzero(np.invert(a))) / n,
        (n - np.count_nonzero(a)) / n,
    )


def content_hash(image: bytes) -> str:
    """A content hash of the pixels (for duplicate detection, not for security)."""
    return hashlib.sha1(image, usedforsecurity=False).hexdigest()


class _Rows:
    """Column-wise accumulation of profile rows (cheap appends, one DataFrame at the end)."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {c: [] for c in RECORD_COLUMNS}
        self._pending: list[tuple[int, bytes]] = []
        self._rings: list[tuple[list[int], np.ndarray]] = []

    def add(self, **values: Any) -> None:
        for name, column in self.cols.items():
            column.append(values.get(name, None if name == "perceptual_hash" else _NAN))

    def hash_later(self, image: bytes) -> None:
        """Queue the last added row's image for its perceptual hash."""
        self._pending.append((len(self.cols["perceptual_hash"]) - 1, image))
        if len(self._pending) >= _HASH_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        tiles = np.stack([np.frombuffer(img, dtype=np.uint8) for _, img in self._pending])
        tiles = tiles.reshape(-1, SOURCE_SIZE, SOURCE_SIZE)
        hexes = to_hex(perceptual_hashes(tiles))
        column = self.cols["perceptual_hash"]
        for (row, _), text in zip(self._pending, hexes, strict=True):
            column[row] = text
        self._rings.append(([row for row, _ in self._pending], ring_spectra(tiles)))
        self._pending = []

    def rings(self) -> np.ndarray:
        """The ring spectra of every row (zeros for rows without a hashed tile)."""
        out = np.zeros((len(self.cols["record_index"]), RINGS, HARMONICS), np.complex64)
        for rows, spectra in self._rings:
            out[rows] = spectra
        return out

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        df = pd.DataFrame(
            {
                "record_index": np.asarray(self.cols["record_index"], dtype=np.int64),
                "framing_ok": np.asarray(self.cols["framing_ok"], dtype=bool),
                # object: True / False / None (unknown, after a framing error)
                "parse_ok": pd.Series(self.cols["parse_ok"], dtype=object),
                "problem": pd.Series(self.cols["problem"], dtype=object),
                **{c: np.asarray(self.cols[c], dtype=np.float64) for c in RECORD_COLUMNS[4:13]},
                "content_hash": pd.Series(self.cols["content_hash"], dtype=object),
                "perceptual_hash": pd.Series(self.cols["perceptual_hash"], dtype=object),
            }
        )
        return df.set_index(df["record_index"].rename(None))


def _record_row(index: int, payload: bytes) -> dict[str, Any]:
    try:
        tile = decode_tile(payload)
    except ExampleDecodeError as exc:
        return {
            "record_index": index,
            "framing_ok": True,
            "parse_ok": False,
            "problem": f"not a tf.train.Example: {exc}",
            "content_hash": None,
        }
    row: dict[str, Any] = {
        "record_index": index,
        "framing_ok": True,
        "parse_ok": True,
        "problem": None,
        "label": _NAN if tile.label is None else float(tile.label),
        "label_normal": _NAN if tile.label_normal is None else float(tile.label_normal),
        "content_hash": None,
    }
    if tile.image is not None:
        row["image_bytes"] = float(len(tile.image))
        row["content_hash"] = content_hash(tile.image)
        if len(tile.image) == IMAGE_BYTES:
            row["image"] = tile.image  # for the perceptual hash; not a column
            (
                row["pixel_mean"],
                row["pixel_std"],
                row["pixel_min"],
                row["pixel_max"],
                row["saturated_fraction"],
                row["zero_fraction"],
            ) = pixel_stats(tile.image)
    return row


def profile_file(
    path: Path | str, *, sha256: str | None = None, progress: bool = False
) -> FileProfile:
    """Stream ``path`` once and profile every record; never raises for bad content.

    ``sha256`` may be passed when already known (the run hashes each file first, for the
    ledger), which saves a second pass over the bytes. Raises :class:`DataError` only when
    the file does not exist.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    size_bytes = path.stat().st_size
    if sha256 is None:
        sha256 = file_sha256(path).sha256
    compression = detect_compression(path)
    rows = _Rows()
    framing_error: str | None = None
    framing_index: int | None = None
    parse_errors = 0
    count = 0
    bar = tqdm(desc=path.name, unit="rec", disable=not progress, leave=False)
    try:
        for count, payload in enumerate(iter_records(path, compression=compression), start=1):
            row = _record_row(count - 1, payload)
            parse_errors += row["parse_ok"] is False
            image = row.pop("image", None)
            rows.add(**row)
            if image is not None:
                rows.hash_later(image)
            bar.update(1)
    except CorruptRecordError as exc:
        framing_error = exc.problem.split(": ", 1)[-1] if exc.problem else str(exc)
        framing_index = exc.index
        count = exc.index
        rows.add(
            record_index=exc.index,
            framing_ok=False,
            parse_ok=None,
            problem=framing_error,
            content_hash=None,
        )
    finally:
        bar.close()
    rows.flush()
    facts = FileFacts(
        path=str(path),
        name=path.name,
        size_bytes=size_bytes,
        sha256=sha256,
        compression=compression or "none",
        record_count=count,
        crc_ok=framing_error is None,
        framing_error=framing_error,
        framing_error_index=framing_index,
        parse_errors=parse_errors,
        tfrecord_name=is_tfrecord_path(path.name),
    )
    return FileProfile(facts=facts, records=rows.frame(), rings=rows.rings())


def add_test_copy_column(
    frame: pd.DataFrame, guard: TestGuard, rings: np.ndarray | None = None
) -> None:
    """Add ``near_test_copy`` to a record profile: ``""`` when the record copies no held-out
    test tile, else which one, e.g. ``"cv10_data.npy#17 (distance 3)"``, ``"... (exact
    copy)"`` or ``"... (rotated/rescaled/inverted view, ring correlation 0.91)"`` (this one
    only given the profile's ``rings``); None when the record has no valid image to compare
    (other rules fail it)."""
    import pandas as pd

    column = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    has_hash = frame["perceptual_hash"].notna().to_numpy()
    if has_hash.any():
        hashes = from_hex(frame["perceptual_hash"][has_hash])
        queries = None if rings is None else rings[has_hash]
        found = guard.find(hashes, frame["content_hash"][has_hash].tolist(), queries)
        column[has_hash] = ["" if c is None else c.describe() for c in found]
    frame["near_test_copy"] = column
