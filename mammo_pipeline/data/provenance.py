"""Provenance that travels with a file: whether the project generated it (SYNTHETIC).

A PNG the project's generators write carries a ``tEXt`` chunk ``mammo:provenance`` =
``SYNTHETIC``; any other file (a ``.npy`` tile, a PGM, a DICOM) may carry a sidecar
``<file>.provenance`` holding that word. A file with neither has *no declared* provenance:
nothing here ever concludes "real" from an absent marker. Reading is a walk over the PNG
chunk headers (no image decoding, no third-party import).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any, Literal

#: The ``tEXt`` keyword of the marker (PNG keywords are Latin-1, 1-79 characters).
PNG_KEY = "mammo:provenance"
SYNTHETIC = "SYNTHETIC"
#: What every figure and answer says of an image whose origin nobody declared (never "real").
NOT_DECLARED = "provenance not declared"
#: Suffix of the sidecar of a non-PNG file: ``tile.npy`` -> ``tile.npy.provenance``.
SIDECAR_SUFFIX = ".provenance"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Provenance = Literal["SYNTHETIC"] | None


def png_text_chunk(key: str = PNG_KEY, value: str = SYNTHETIC) -> bytes:
    """A complete ``tEXt`` chunk (length, type, data, CRC)."""
    body = b"tEXt" + key.encode("latin-1") + b"\0" + value.encode("latin-1")
    return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))


def mark_png_synthetic(png: bytes) -> bytes:
    """``png`` with the SYNTHETIC marker inserted right after its header chunk (IHDR)."""
    if not png.startswith(_PNG_SIGNATURE) or png_provenance(png) == SYNTHETIC:
        return png
    ihdr_end = len(_PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:ihdr_end] + png_text_chunk() + png[ihdr_end:]


def png_bytes(pixels: Any, *, synthetic: bool) -> bytes:
    """An image array as PNG bytes, carrying the SYNTHETIC marker when ``synthetic``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return mark_png_synthetic(buf.getvalue()) if synthetic else buf.getvalue()


def png_provenance(data: bytes) -> Provenance:
    """``"SYNTHETIC"`` when the PNG bytes carry the marker, else ``None`` (not declared)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IEND":
            break
        if kind == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + length].partition(b"\0")
            if key == PNG_KEY.encode("latin-1") and value.strip() == SYNTHETIC.encode():
                return SYNTHETIC
        pos += 12 + length
    return None


def sidecar(path: Path | str) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def write_sidecar(path: Path | str) -> Path:
    """Declare a non-PNG file the project wrote SYNTHETIC; returns the sidecar path."""
    out = sidecar(path)
    out.write_text(SYNTHETIC + "\n")
    return out


def file_provenance(path: Path | str, data: bytes | None = None) -> Provenance:
    """A file's declared provenance: its PNG marker, else its sidecar; ``None`` if neither."""
    path = Path(path)
    if data is None and path.suffix.lower() == ".png":
        with open(path, "rb") as f:
            data = f.read()
    if data is not None and png_provenance(data) == SYNTHETIC:
        return SYNTHETIC
    try:
        word = sidecar(path).read_text().strip()
    except OSError:
        return None
    return SYNTHETIC if word == SYNTHETIC else None
