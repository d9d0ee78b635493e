"""Reading one mammogram from a DICOM file (pydicom) into a :class:`MedicalImage`.

What :func:`read_dicom` does, in order: parse the Part 10 file, refuse what it cannot turn into
one grayscale picture (no pixel data, multi-frame, colour, a compressed transfer syntax whose
decoder is not installed), decode the stored values, apply the Modality LUT / Rescale, then
the VOI LUT or Window (when the file has one), and invert MONOCHROME1 so that larger always
means denser. Pixel spacing comes from PixelSpacing, else ImagerPixelSpacing, else None.

Privacy: patient identifiers are never read into return values, messages or logs. pydicom
converts element values lazily, so identifying elements are never even decoded, and any text
taken from a pydicom exception is scrubbed of the identifying values before it is shown.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mammo_pipeline.imaging import ImageReadError, MedicalImage, to_display_uint8

__all__ = ["DicomError", "read_dicom", "to_display_uint8"]

#: Elements whose values must never appear in a message (DICOM PS3.15 basic profile subset).
IDENTIFYING_TAGS: tuple[int, ...] = (
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100021,  # IssuerOfPatientID
    0x00100030,  # PatientBirthDate
    0x00100032,  # PatientBirthTime
    0x00101000,  # OtherPatientIDs
    0x00101001,  # OtherPatientNames
    0x00101040,  # PatientAddress
    0x00102154,  # PatientTelephoneNumbers
    0x00080050,  # AccessionNumber
    0x00080080,  # InstitutionName
    0x00080090,  # ReferringPhysicianName
    0x00081050,  # PerformingPhysicianName
    0x00200010,  # StudyID
)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


class DicomError(ImageReadError):
    """A DICOM file that cannot be turned into one grayscale image; the message names the
    file (when there is one) and the problem, never a patient identifier."""


def _label(data: bytes | Path | str, name: str | None) -> str:
    if name:
        return name
    if isinstance(data, bytes | bytearray):
        return "uploaded DICOM"
    return str(data)


def _identifying_values(ds) -> list[str]:
    """Raw text of the identifying elements, read without value conversion (no warnings)."""
    values: list[str] = []
    for tag in IDENTIFYING_TAGS:
        try:
            elem = ds.get_item(tag)
        except Exception:  # noqa: BLE001 - a broken element just is not redacted further
            continue
        if elem is None:
            continue
        raw = elem.value
        if isinstance(raw, bytes | bytearray):
            text = bytes(raw).decode("latin-1", errors="replace")
        else:
            text = str(raw)
        for part in text.replace("\x00", " ").replace("^", "\\").split("\\"):
            part = part.strip()
            if len(part) >= 2:
                values.append(part)
        if text.strip():
            values.append(text.strip())
    return sorted(set(values), key=len, reverse=True)


def _redact(message: str, ds, limit: int = 400) -> str:
    """``message`` on one line, without identifying values, at most ``limit`` characters."""
    for value in _identifying_values(ds):
        message = message.replace(value, "<redacted>")
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _spacing(ds, label: str) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise DicomError(f"{label}: {keyword} is not two numbers") from exc
        if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
            raise DicomError(f"{label}: {keyword} ({row}, {col}) is not positive")
        return row, col
    return None


def _check_decodable(ds, label: str) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return  # pydicom guessed the encoding while reading; native pixel data decode as usual
    uid = UID(str(uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise DicomError(
            f"{label}: transfer syntax {uid} ({uid.name}) is not supported", status=415
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise DicomError(
            f"{label}: transfer syntax {uid} ({uid.name}) needs a decoder that is not "
            f"installed ({missing})",
            status=415,
        )


def _nominal_range(ds) -> tuple[float, float]:
    """The value range of the output of the modality + VOI stages, from the header alone
    (used to invert MONOCHROME1 without depending on the image content)."""
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        lo, hi = 0.0, 2.0**depth - 1
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    voi = ds.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        depth = int(voi[0].LUTDescriptor[2])
        lo, hi = 0.0, 2.0**depth - 1
    # Windowing maps onto the same range as its input (PS3.3 C.11.2.1.2), so nothing changes.
    return lo, hi


def read_dicom(data: bytes | Path | str, *, name: str | None = None) -> MedicalImage:
    """Read one grayscale DICOM image (bytes or a path) as a :class:`MedicalImage`.

    ``name`` labels the input in messages (default: the path, or "uploaded DICOM").
    Raises :class:`DicomError` (status 415 or 422) naming the problem.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    label = _label(data, name)
    if isinstance(data, str | Path) and not Path(data).is_file():
        raise DicomError(f"{label}: no such file")
    source = io.BytesIO(bytes(data)) if isinstance(data, bytes | bytearray) else data
    try:
        ds = pydicom.dcmread(source)
    except InvalidDicomError as exc:
        raise DicomError(f"{label}: not a DICOM file (no DICM preamble)", status=415) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on broken files
        raise DicomError(f"{label}: unreadable DICOM ({type(exc).__name__})") from exc

    try:
        if (
            "PixelData" not in ds
            and "FloatPixelData" not in ds
            and "DoubleFloatPixelData" not in ds
        ):
            raise DicomError(f"{label}: the DICOM file has no pixel data")
        samples = int(ds.get("SamplesPerPixel", 1))
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if samples != 1 or photometric not in _MONOCHROME:
            raise DicomError(
                f"{label}: colour or non-monochrome image ({photometric or 'unknown'}, "
                f"{samples} samples per pixel) is not supported"
            )
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise DicomError(f"{label}: multi-frame DICOM ({frames} frames) is not supported")
        _check_decodable(ds, label)
        spacing = _spacing(ds, label)
        bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        try:
            stored = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - decoder failures come in many types
            raise DicomError(
                f"{label}: pixel data could not be decoded ({type(exc).__name__}: "
                f"{_redact(str(exc), ds)})"
            ) from exc
        if stored.ndim != 2:
            raise DicomError(f"{label}: expected one 2-D frame, got pixel array {stored.shape}")
        try:
            values = apply_modality_lut(stored, ds)
            values = apply_voi_lut(values, ds)
            lo, hi = _nominal_range(ds)
        except (ValueError, NotImplementedError, AttributeError, IndexError, TypeError) as exc:
            raise DicomError(
                f"{label}: invalid Modality/VOI LUT or window ({type(exc).__name__}: "
                f"{_redact(str(exc), ds)})"
            ) from exc
        # Integers up to 24 bits are exact in float32; LUT/window output (float64) is narrowed
        # at the end.
        exact32 = np.issubdtype(values.dtype, np.integer) and values.dtype.itemsize <= 2
        pixels = np.asarray(values, dtype=np.float32 if exact32 else np.float64)
        if photometric == "MONOCHROME1":
            pixels = (lo + hi) - pixels
        if not np.all(np.isfinite(pixels)):
            raise DicomError(f"{label}: pixel values are not finite after rescale/window")
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no identifiers
        raise DicomError(
            f"{label}: unusable DICOM ({type(exc).__name__}: {_redact(str(exc), ds)})"
        ) from exc
    return MedicalImage(
        pixels=pixels.astype(np.float32, copy=False),
        pixel_spacing_mm=spacing,
        bits_stored=bits_stored,
        source="dicom",
    )
