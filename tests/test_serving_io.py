"""Unit tests of upload decoding: every accepted format, and every bad input gets InputError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mammo_pipeline.serving.image_io import InputError, decode_image, to_model_input

MAX_BYTES = 1 << 20
MAX_PIXELS = 4_000_000


def encode(arr: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    """Encode a 2-D uint8/uint16 array (or H x W x 3 uint8) with Pillow or numpy."""
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, arr, allow_pickle=False)
    else:
        Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` 8-bit grey pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def npy(arr: np.ndarray) -> bytes:
    return encode(arr, "npy")


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 50), dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    return decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PPM", "npy"])
def test_lossless_formats_roundtrip(gray: np.ndarray, fmt: str) -> None:
    out = decode(encode(gray, fmt))
    assert out.dtype == np.uint8 and out.shape == (40, 50, 1)
    np.testing.assert_array_equal(out[..., 0], gray)


def test_jpeg_decodes_close(gray: np.ndarray) -> None:
    out = decode(encode(gray, "JPEG", quality=95))
    assert out.shape == (40, 50, 1)


def test_16bit_png_and_npy_scaled_like_training(gray: np.ndarray) -> None:
    wide = gray.astype(np.uint16) * 257
    for data in (encode(wide, "PNG"), npy(wide), encode(wide, "TIFF")):
        np.testing.assert_array_equal(decode(data)[..., 0], gray)


def test_colour_png_to_luma() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200
    out = decode(encode(rgb, "PNG"))
    assert out.shape == (4, 4, 1) and int(out[0, 0, 0]) == int(200 * 0.587)


def test_npy_float_and_channel_forms(gray: np.ndarray) -> None:
    np.testing.assert_array_equal(decode(npy(gray[..., None]))[..., 0], gray)
    np.testing.assert_array_equal(decode(npy(gray.astype(np.float32) / 255.0))[..., 0], gray)


def test_model_input_is_shared_preprocessing(gray: np.ndarray) -> None:
    from mammo_pipeline.data.preprocess import prepare_image

    x = to_model_input(decode(encode(gray, "PNG")), 32)
    assert x.shape == (32, 32, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x, prepare_image(gray[..., None], 32).numpy())


BAD = {
    "empty": (b"", 400, "empty"),
    "text": (b"hello, this is not an image", 400, "not a supported image"),
    "truncated png": (None, 400, "truncated"),
    "bomb png": (bomb_png(), 413, "decompression-bomb"),
    "npy float64 rank 4": (npy(np.zeros((1, 2, 3, 4))), 400, "shape"),
    "npy rank 1": (npy(np.zeros(10, np.uint8)), 400, "shape"),
    "npy object": (None, 400, ".npy"),
    "npy int64": (npy(np.zeros((3, 3), np.int64)), 400, "dtype"),
    "npy nan": (npy(np.full((3, 3), np.nan, np.float32)), 400, "NaN"),
    "npy truncated": (npy(np.zeros((64, 64), np.uint8))[:200], 400, ".npy"),
    "jpeg header only": (b"\xff\xd8\xff\xe0" + b"\x00" * 20, 400, "JPEG"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_raise_input_error(gray: np.ndarray, name: str) -> None:
    data, status, words = BAD[name]
    if name == "truncated png":
        data = encode(gray, "PNG")[:-40]
    if name == "npy object":
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        data = buf.getvalue()
    with pytest.raises(InputError) as info:
        decode(data)
    assert info.value.status == status
    assert words.lower() in str(info.value).lower()


def test_size_limit_checked_before_decoding() -> None:
    with pytest.raises(InputError) as info:
        decode_image(b"x" * 2048, max_bytes=1024, max_pixels=MAX_PIXELS)
    assert info.value.status == 413


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_cap_applies_to_real_images(gray: np.ndarray) -> None:
    with pytest.raises(InputError) as info:
        decode_image(encode(gray, "PNG"), max_bytes=MAX_BYTES, max_pixels=1999)
    assert info.value.status == 413
