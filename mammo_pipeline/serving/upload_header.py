"""What an uploaded file's header says (format, width x height, DICOM pixel spacing), read
from the file on disk without decoding a pixel: the service budgets memory and checks a
film's analysis bounds with it before decoding (:mod:`mammo_pipeline.serving.limits`,
:mod:`mammo_pipeline.analysis.bounds`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo_pipeline.serving.image_io import (
    _PIL_FORMATS,
    InputError,
    _bomb_error,
    _check_pixels,
    _dicom_header,
    check_size,
    peek_size,
    sniff_format,
)


@dataclass(frozen=True)
class UploadHeader:
    """What an upload's header says, before any pixel is decoded."""

    fmt: str
    width: int
    height: int
    pixel_spacing_mm: float | None = None  # DICOM only

    @property
    def pixels(self) -> int:
        return self.width * self.height


#: Bytes read from an uploaded file to recognise its format.
_SNIFF_BYTES = 4096


def peek_upload(
    path: Path, *, max_bytes: int, max_pixels: int, dicom: bool = False
) -> UploadHeader:
    """The :class:`UploadHeader` of an uploaded file on disk, reading only its header (the
    size is checked first; nothing is decompressed). Raises :class:`InputError` like
    :func:`peek_size`."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read upload: {exc.strerror}") from None
    check_size(size, max_bytes)
    fmt = sniff_format(head, dicom=dicom)
    if fmt == "dicom":
        width, height, spacing = _dicom_header(path)
        width, height = max(width, 1), max(height, 1)
        _check_pixels(width, height, max_pixels)
        return UploadHeader(fmt, width, height, spacing)
    if fmt == "npy":
        width, height = peek_size(head, max_pixels=max_pixels)
        return UploadHeader(fmt, width, height)
    from PIL import Image

    try:
        with Image.open(path, formats=[_PIL_FORMATS[fmt]]) as img:
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(exc, max_pixels) from None
    except Exception:  # noqa: BLE001 - the decoder gives the precise message
        width, height = 1, 1
    width, height = max(width, 1), max(height, 1)
    _check_pixels(width, height, max_pixels)
    return UploadHeader(fmt, width, height)
