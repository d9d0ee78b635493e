"""Decoding of uploaded images for the prediction service (and ``mammo predict``).

An upload is one file: PNG, JPEG, TIFF, PGM (8 or 16 bit, grey or colour), a ``.npy`` array
or a DICOM file. The format is recognised from the file's magic bytes (DICOM: ``DICM`` at
offset 128), never from its name; the only hint taken from the client is ``dicom=True`` (the
service passes it for a ``.dcm`` name or ``application/dicom``), which sends a file without
the preamble to the DICOM reader for a clear error. Every check that can fail raises
:class:`InputError` with a message meant for the client (the service maps it to a 4xx) and
never includes pixel data:

- size: the byte count is checked before anything is decoded (``max_upload_bytes``);
- decompression bombs: the declared width x height is checked against ``max_image_pixels``
  from the header, before the pixels are decompressed; Pillow's own bomb guard is an error;
- truncated or corrupt files, unsupported formats, empty bodies;
- ``.npy``: loaded with ``allow_pickle=False``; only uint8/uint16/float arrays of rank 2 or
  rank 3 (H x W x 1/3/4) are accepted;
- DICOM: :func:`mammo_pipeline.imaging.dicom.read_dicom` (MONOCHROME1 inverted, Modality and
  VOI LUT / window applied, 12-16 bit); its pixel spacing is kept (:class:`DecodedUpload`).
  No patient identifier is ever read into a message.

:func:`peek_size` reads only the header (width x height) so the service can budget memory
before decoding (:mod:`mammo_pipeline.serving.limits`).

What comes out depends on what the image is (one rule per kind, every format alike):

- a whole film (``whole_image=True``, ``/analyze``): float32 intensities, larger = denser
  (:func:`mammo_pipeline.imaging.preprocess.to_intensity`; a DICOM's values after its
  LUTs), with the DICOM's spacing. Windowing, scale and mask are the analysis' business
  (:func:`mammo_pipeline.imaging.preprocess.prepare_film`, the importers' path), so a film
  scores the same whichever format it came in;
- a tile (``/predict``): H x W x 1 uint8, the contract's pixel form
  (:func:`mammo_pipeline.data.preprocess.to_uint8_gray`; a DICOM tile is windowed on the
  percentiles of all its pixels), then :func:`mammo_pipeline.data.preprocess.prepare_image`.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_pipeline.data.preprocess import prepare_image, to_uint8_gray
from mammo_pipeline.errors import MammoError
from mammo_pipeline.imaging.preprocess import to_intensity

#: Magic bytes of the accepted formats.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P5", "pgm"),
    (b"P2", "pgm"),
    (b"\x93NUMPY", "npy"),
)
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "pgm": "PPM"}
_NPY_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)

SUPPORTED = "PNG, JPEG, TIFF, PGM, .npy or DICOM"
_DICOM_MAGIC_AT = 128
#: Anisotropy (|row - col| / row) above which a DICOM's pixel spacing is refused.
MAX_SPACING_ANISOTROPY = 0.02


class InputError(MammoError):
    """An upload that cannot be used; ``status`` is the HTTP status the service answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class DecodedUpload:
    """One decoded upload, its format and (DICOM) pixel spacing: a tile as ``gray`` (H x W x 1
    uint8), a whole film as ``intensities`` (H x W float32, larger = denser; ``gray`` None)."""

    gray: np.ndarray | None
    fmt: str
    pixel_spacing_mm: float | None = None
    intensities: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        arr = self.gray if self.gray is not None else self.intensities
        assert arr is not None
        return int(arr.shape[0]), int(arr.shape[1])


def sniff_format(data: bytes, *, dicom: bool = False) -> str:
    """The format name of ``data`` from its magic bytes, or raise :class:`InputError`.
    ``dicom``: the client said DICOM (file name / media type), so no magic means a DICOM
    without its preamble, which the DICOM reader refuses with its own message."""
    if not data:
        raise InputError("empty upload: send one image file (" + SUPPORTED + ")")
    if data[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + 4] == b"DICM" or dicom:
        return "dicom"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    raise InputError(f"not a supported image: expected {SUPPORTED}")


def check_size(n_bytes: int, max_bytes: int) -> None:
    """Raise a 413 :class:`InputError` when an upload is over the configured limit."""
    if n_bytes > max_bytes:
        raise InputError(
            f"upload of {n_bytes} bytes is over the limit of {max_bytes} bytes", status=413
        )


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            f"image of {width}x{height} pixels is over the limit of {max_pixels} pixels "
            "(max_image_pixels, decompression-bomb guard)",
            status=413,
        )


def _decode_npy(data: bytes, max_pixels: int) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:  # object arrays (pickle refused), bad header
        raise InputError(f"unreadable .npy array: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"truncated or corrupt .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(".npy upload must hold one array")
    if arr.dtype.type not in _NPY_DTYPES:
        raise InputError(
            f".npy array has dtype {arr.dtype}; expected uint8, uint16 or float "
            "(float in 0..1 or 0..255)"
        )
    ok_rank = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))
    if not ok_rank:
        raise InputError(
            f".npy array has shape {arr.shape}; expected H x W or H x W x 1 (or 3/4 channels)"
        )
    _check_pixels(int(arr.shape[1]), int(arr.shape[0]), max_pixels)
    return arr


def _decode_pil(data: bytes, fmt: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    # The explicit check below (the configured cap, from the header) runs before any pixel is
    # decompressed. Pillow's own process-wide guard is left at its default as a backstop:
    # setting it here leaked one caller's cap into every other Pillow user of the process
    # (heatmaps, the CLI's header peek, tests).
    try:
        img = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
        width, height = img.size
        _check_pixels(width, height, max_pixels)
        img.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(exc, max_pixels) from None
    except UnidentifiedImageError:
        raise InputError(f"corrupt {fmt.upper()} file: cannot identify the image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"truncated or corrupt {fmt.upper()} file: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise InputError(f"cannot decode {fmt.upper()} file: {type(exc).__name__}") from None

    mode = img.mode
    if mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
        mode = "RGB"
    elif mode == "LA":
        img = img.getchannel("L")
        mode = "L"
    arr = np.asarray(img)
    if mode == "I" or mode.startswith("I;"):
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise InputError(f"{fmt.upper()} image has integer pixels outside 0..65535")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = arr.astype(np.float64)
    return arr


def _bomb_error(exc: Exception, max_pixels: int) -> InputError:
    """Pillow's own bomb guard fired (it opens at twice the cap): quote OUR configured cap."""
    m = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"image of {m.group(1)} pixels" if m else "image"
    return InputError(
        f"{size} is over the limit of {max_pixels} pixels (max_image_pixels, "
        "decompression-bomb guard)",
        status=413,
    )


def _dicom_error(exc: Exception) -> InputError:
    status = int(getattr(exc, "status", 422))
    return InputError(str(exc), status=status if 400 <= status < 500 else 422)


def _decode_dicom(data: bytes, max_pixels: int, whole_image: bool) -> DecodedUpload:
    from mammo_pipeline.imaging import display_window, to_display_uint8
    from mammo_pipeline.imaging.dicom import DicomError, read_dicom

    width, height = _dicom_size(data)
    _check_pixels(width, height, max_pixels)
    try:
        image = read_dicom(data, name="uploaded DICOM")
    except DicomError as exc:
        raise _dicom_error(exc) from None
    spacing = None
    if image.pixel_spacing_mm is not None:
        row, col = image.pixel_spacing_mm
        if abs(row - col) / row > MAX_SPACING_ANISOTROPY:
            raise InputError(
                f"uploaded DICOM: anisotropic pixel spacing ({row:g}, {col:g}) mm is not supported",
                status=422,
            )
        spacing = (row + col) / 2.0
    pixels = image.pixels
    if whole_image:  # intensities: the film is prepared by the analysis, as for training
        return DecodedUpload(None, "dicom", spacing, intensities=pixels)
    try:  # a tile: window on all its pixels (a tile has no background)
        gray = to_display_uint8(pixels, display_window(pixels, np.ones(pixels.shape, bool)))
    except ValueError as exc:
        raise InputError(f"uploaded DICOM: unusable pixel data: {exc}", status=422) from None
    return DecodedUpload(gray[..., np.newaxis], "dicom", spacing)


def _dicom_size(data: bytes | Path) -> tuple[int, int]:
    width, height, _ = _dicom_header(data)
    return width, height


def _dicom_header(data: bytes | Path) -> tuple[int, int, float | None]:
    """(columns, rows, mean pixel spacing or None) from a DICOM's header, pixels unread;
    (1, 1, None) when unreadable (the full reader gives the precise message)."""
    import pydicom

    try:
        src = data if isinstance(data, Path) else io.BytesIO(data)
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        width, height = int(ds.Columns), int(ds.Rows)
    except Exception:  # noqa: BLE001 - the full reader gives the precise message
        return 1, 1, None
    try:
        row, col = (float(v) for v in ds.PixelSpacing)
        spacing = (row + col) / 2.0 if row > 0 and col > 0 else None
    except Exception:  # noqa: BLE001 - no usable spacing: the reader decides later
        spacing = None
    return width, height, spacing


def peek_size(data: bytes, *, max_pixels: int, dicom: bool = False) -> tuple[int, int]:
    """(width, height) of an upload from its header only (nothing decompressed); (1, 1)
    when the header cannot be read (the decoder then names the problem). Raises
    :class:`InputError` for what cannot be an image or is over ``max_pixels``."""
    fmt = sniff_format(data, dicom=dicom)
    if fmt == "dicom":
        width, height = _dicom_size(data)
    elif fmt == "npy":
        try:
            fh = io.BytesIO(data)
            version = np.lib.format.read_magic(fh)
            shape, _, _ = np.lib.format._read_array_header(fh, version)  # noqa: SLF001
        except Exception:  # noqa: BLE001 - the decoder gives the precise message
            return 1, 1
        if len(shape) < 2:
            return 1, 1
        height, width = int(shape[0]), int(shape[1])
    else:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
                width, height = img.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _bomb_error(exc, max_pixels) from None
        except Exception:  # noqa: BLE001 - the decoder gives the precise message
            return 1, 1
    width, height = max(width, 1), max(height, 1)
    _check_pixels(width, height, max_pixels)
    return width, height


def decode_upload(
    data: bytes, *, max_bytes: int, max_pixels: int, dicom: bool = False, whole_image: bool = False
) -> DecodedUpload:
    """Bytes of one upload -> :class:`DecodedUpload` (format, spacing and the pixels).
    ``whole_image``: a whole film, returned as float intensities for
    :func:`mammo_pipeline.imaging.preprocess.prepare_film`; else a tile, H x W x 1 uint8."""
    check_size(len(data), max_bytes)
    fmt = sniff_format(data, dicom=dicom)
    if fmt == "dicom":
        return _decode_dicom(data, max_pixels, whole_image)
    arr = _decode_npy(data, max_pixels) if fmt == "npy" else _decode_pil(data, fmt, max_pixels)
    try:
        if whole_image:
            return DecodedUpload(None, fmt, intensities=to_intensity(arr))
        return DecodedUpload(to_uint8_gray(arr), fmt)
    except ValueError as exc:
        raise InputError(f"unusable pixel data: {exc}") from None


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Bytes of one upload -> H x W x 1 uint8 grayscale (the training input's pixel form)."""
    gray = decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels).gray
    assert gray is not None  # a tile
    return gray


def read_upload(path: Path, max_bytes: int) -> bytes:
    """The bytes of an uploaded file on disk; the size is checked before reading."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read upload: {exc.strerror}") from None
    check_size(size, max_bytes)
    return path.read_bytes()


def decode_path(path: Path, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Like :func:`decode_image` for a file on disk; the size is checked before reading."""
    data = read_upload(path, max_bytes)
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def to_model_input(gray: np.ndarray, image_size: int) -> np.ndarray:
    """H x W x 1 uint8 -> image_size x image_size x 1 float32 in 0..255 (shared with training)."""
    return np.asarray(prepare_image(gray, image_size), dtype=np.float32)


#: ``/predict`` takes images up to this many tile sides on the longer side (at the training
#: scale); anything larger is a whole mammogram, for ``/analyze``.
TILE_FACTOR = 2.0


def tile_side_limit(pixel_spacing_mm: float | None = None) -> float:
    """Longest side (px) of an image ``/predict`` accepts: two 299-px tiles at the training
    scale (0.1 mm/px), scaled by the image's own spacing when it is known (DICOM)."""
    from mammo_pipeline.data.schema import SOURCE_SIZE, TILE_MM_PER_PX

    spacing = pixel_spacing_mm or TILE_MM_PER_PX
    return TILE_FACTOR * SOURCE_SIZE * TILE_MM_PER_PX / spacing


def is_whole_film(width: int, height: int, pixel_spacing_mm: float | None = None) -> bool:
    """Whether an image is a whole mammogram rather than a tile (the service and
    ``mammo predict`` decide with this one rule)."""
    return max(width, height) > tile_side_limit(pixel_spacing_mm)
