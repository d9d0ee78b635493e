"""Reading and writing TFRecord files (plain or GZIP) without TensorFlow.

A TFRecord file is a sequence of ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)``, optionally GZIP-compressed as a whole. Reading the framing
ourselves lets us stream files of any size in constant memory, check every checksum, report
*which* record is corrupt instead of failing the whole file, and count records without
decoding images. TensorFlow reads the same files in the training pipeline.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import google_crc32c

from mammo_pipeline.data.schema import GZIP_MAGIC
from mammo_pipeline.errors import CorruptRecordError, DataError

Compression = Literal["", "GZIP"]

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
#: A single record larger than this is treated as corruption (a real tile is ~90 kB).
MAX_RECORD_BYTES = 64 * 1024 * 1024


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def detect_compression(path: Path) -> Compression:
    """'GZIP' when the file starts with the gzip magic bytes, else '' (plain)."""
    with open(path, "rb") as fh:
        return "GZIP" if fh.read(2) == GZIP_MAGIC else ""


@contextmanager
def _open_stream(path: Path, compression: Compression) -> Iterator[BinaryIO]:
    fh: BinaryIO
    if compression == "GZIP":
        fh = gzip.open(path, "rb")  # type: ignore[assignment]
    else:
        fh = open(path, "rb")  # noqa: SIM115
    try:
        yield fh
    finally:
        fh.close()


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    chunks = []
    remaining = n
    while remaining:
        chunk = fh.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def iter_records(
    path: Path | str, *, verify: bool = True, compression: Compression | None = None
) -> Iterator[bytes]:
    """Yield each record's payload; raise :class:`CorruptRecordError` at the first bad one.

    The error names the record index and the problem (truncated header, bad length CRC,
    truncated data, bad data CRC, or a gzip stream that does not decompress).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    if compression is None:
        compression = detect_compression(path)
    index = 0
    try:
        with _open_stream(path, compression) as fh:
            while True:
                header = _read_exact(fh, _HEADER.size)
                if not header:
                    return
                if len(header) < _HEADER.size:
                    raise CorruptRecordError(path, index, "truncated record header")
                length, length_crc = _HEADER.unpack(header)
                if verify and masked_crc32c(header[:8]) != length_crc:
                    raise CorruptRecordError(path, index, "length checksum mismatch")
                if length > MAX_RECORD_BYTES:
                    raise CorruptRecordError(path, index, f"implausible record length {length}")
                data = _read_exact(fh, length)
                footer = _read_exact(fh, _FOOTER.size)
                if len(data) < length or len(footer) < _FOOTER.size:
                    raise CorruptRecordError(path, index, "truncated record data")
                if verify and masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
                    raise CorruptRecordError(path, index, "data checksum mismatch (CRC)")
                yield data
                index += 1
    except (OSError, EOFError, zlib.error) as exc:  # gzip errors surface as these
        raise CorruptRecordError(path, index, f"unreadable stream: {exc}") from exc


def count_records(path: Path | str) -> int:
    """Number of records, checking framing but not payload CRCs, without parsing payloads."""
    path = Path(path)
    compression = detect_compression(path)
    if compression == "GZIP":
        return sum(1 for _ in iter_records(path, verify=False, compression=compression))
    size = path.stat().st_size
    count = 0
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            header = _read_exact(fh, _HEADER.size)
            if len(header) < _HEADER.size:
                raise CorruptRecordError(path, count, "truncated record header")
            length, _ = _HEADER.unpack(header)
            pos += _HEADER.size + length + _FOOTER.size
            if pos > size:
                raise CorruptRecordError(path, count, "truncated record data")
            fh.seek(pos)
            count += 1
    return count


def _frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def write_records(
    path: Path | str, records: Iterable[bytes], *, compression: Compression = ""
) -> int:
    """Write records atomically (temp file + rename); returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        raw: BinaryIO
        if compression == "GZIP":
            raw = gzip.open(tmp, "wb", compresslevel=6)  # type: ignore[assignment]
        else:
            raw = open(tmp, "wb")  # noqa: SIM115
        with raw:
            for record in records:
                raw.write(_frame(record))
                count += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count


@dataclass(frozen=True, slots=True)
class FileDigest:
    sha256: str
    size_bytes: int


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> FileDigest:
    """Streaming sha256 of a file's bytes."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            size += len(block)
    return FileDigest(h.hexdigest(), size)


def list_tfrecords(directory: Path | str) -> list[Path]:
    """The tfrecord files directly in ``directory``, sorted; a clear error if it is missing."""
    from mammo_pipeline.data.schema import is_tfrecord_path

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "no such directory")
    return sorted(p for p in directory.iterdir() if p.is_file() and is_tfrecord_path(p.name))
