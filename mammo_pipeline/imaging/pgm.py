"""Reading Netpbm grayscale images (PGM) into a :class:`MedicalImage`.

Both the binary (``P5``) and the ASCII (``P2``) forms, with ``maxval`` up to 65535 (two bytes
per pixel, big-endian, when ``maxval`` > 255) and ``#`` comments anywhere in the header, as
the Netpbm specification allows. MIAS films are 8-bit P5, 1024 x 1024, at 200 um per pixel;
PGM carries no pixel size, so the caller supplies it. PGM pixels are brighter = denser, so
no inversion is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo_pipeline.imaging import ImageReadError, MedicalImage

__all__ = ["PgmError", "read_pgm"]

_WHITESPACE = b" \t\r\n\v\f"


class PgmError(ImageReadError):
    """A file that is not a readable PGM image; the message names the file and the problem."""


def _header_tokens(buf: bytes, count: int, label: str) -> tuple[list[int], int]:
    """The first ``count`` integer tokens after the magic number, and the offset just past
    the single whitespace character that ends the last one (where a P5 raster starts)."""
    tokens: list[int] = []
    pos = 2
    n = len(buf)
    while len(tokens) < count:
        while pos < n and (buf[pos] in _WHITESPACE or buf[pos] == ord("#")):
            if buf[pos] == ord("#"):
                while pos < n and buf[pos] not in b"\r\n":
                    pos += 1
            else:
                pos += 1
        start = pos
        while pos < n and buf[pos] not in _WHITESPACE and buf[pos] != ord("#"):
            pos += 1
        token = buf[start:pos]
        if not token:
            raise PgmError(f"{label}: truncated PGM header")
        if not token.isdigit():
            raise PgmError(f"{label}: PGM header value {token[:20]!r} is not a positive integer")
        tokens.append(int(token))
    if pos >= n or buf[pos] not in _WHITESPACE:
        raise PgmError(f"{label}: PGM header does not end with whitespace")
    return tokens, pos + 1


def read_pgm(
    data: bytes | Path | str,
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
    name: str | None = None,
) -> MedicalImage:
    """Read a P5 or P2 PGM image. Raises :class:`PgmError` naming the file and the problem."""
    if isinstance(data, bytes | bytearray):
        label = name or "uploaded PGM"
        buf = bytes(data)
    else:
        label = name or str(data)
        path = Path(data)
        if not path.is_file():
            raise PgmError(f"{label}: no such file")
        buf = path.read_bytes()
    magic = buf[:2]
    if magic not in (b"P5", b"P2"):
        raise PgmError(f"{label}: not a PGM image (magic {magic!r}, expected P5 or P2)", status=415)
    (width, height, maxval), offset = _header_tokens(buf, 3, label)
    if width == 0 or height == 0:
        raise PgmError(f"{label}: PGM image has zero size ({width} x {height})")
    if not 0 < maxval < 65536:
        raise PgmError(f"{label}: PGM maxval {maxval} is outside 1..65535")
    count = width * height
    if magic == b"P5":
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
        need = count * dtype.itemsize
        if len(buf) - offset < need:
            raise PgmError(
                f"{label}: PGM raster is truncated ({len(buf) - offset} of {need} bytes)"
            )
        values = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    else:
        text = buf[offset:]
        # Comments are not allowed in the raster, but strip them defensively.
        lines = [line.split(b"#", 1)[0] for line in text.splitlines()]
        parts = b" ".join(lines).split()
        if len(parts) < count:
            raise PgmError(f"{label}: PGM raster is truncated ({len(parts)} of {count} values)")
        try:
            values = np.array([int(p) for p in parts[:count]], dtype=np.int64)
        except ValueError as exc:
            raise PgmError(f"{label}: PGM raster holds a non-integer value") from exc
    if int(values.max(initial=0)) > maxval:
        raise PgmError(f"{label}: PGM pixel value {int(values.max())} exceeds maxval {maxval}")
    if pixel_spacing_mm is not None:
        row, col = (float(v) for v in pixel_spacing_mm)
        if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
            raise ValueError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm}")
        pixel_spacing_mm = (row, col)
    return MedicalImage(
        pixels=values.reshape(height, width).astype(np.float32),
        pixel_spacing_mm=pixel_spacing_mm,
        bits_stored=max(1, int(maxval).bit_length()),
        source="pgm",
    )
