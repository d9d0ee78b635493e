"""Encode and decode ``tf.train.Example`` protos without importing TensorFlow.

The wire format of ``Example`` is tiny (a map of name -> bytes / float / int64 lists), so a
direct protobuf codec keeps the CLI, profiling and validation free of TensorFlow's start-up
cost. The test suite checks it byte-for-byte against records written by TensorFlow itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from mammo_pipeline.data.schema import (
    IMAGE_BYTES,
    IMAGE_KEY,
    LABEL_KEY,
    LABEL_NORMAL_KEY,
    SOURCE_SIZE,
    label_normal_of,
)

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


class ExampleDecodeError(ValueError):
    """The bytes are not a valid ``tf.train.Example``."""


FeatureValue = list[bytes] | list[float] | list[int]


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ExampleDecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ExampleDecodeError("varint too long")


def _iter_fields(buf: bytes):
    """Yield (field number, wire type, value) where LEN values are bytes slices."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _WIRE_LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise ExampleDecodeError("length-delimited field runs past the end")
            value = buf[pos : pos + length]
            pos += length
        elif wire == _WIRE_I64:
            value = buf[pos : pos + 8]
            pos += 8
        elif wire == _WIRE_I32:
            value = buf[pos : pos + 4]
            pos += 4
        else:
            raise ExampleDecodeError(f"unsupported wire type {wire}")
        if pos > end:
            raise ExampleDecodeError("field runs past the end")
        yield field, wire, value


def _to_signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(buf: bytes) -> FeatureValue:
    for field, wire, value in _iter_fields(buf):
        if wire != _WIRE_LEN:
            raise ExampleDecodeError("malformed Feature")
        if field == 1:  # BytesList
            return [v for f, w, v in _iter_fields(value) if f == 1 and w == _WIRE_LEN]
        if field == 2:  # FloatList (packed or not)
            floats: list[float] = []
            for f, w, v in _iter_fields(value):
                if f != 1:
                    continue
                if w == _WIRE_LEN:
                    floats.extend(struct.unpack(f"<{len(v) // 4}f", v))
                elif w == _WIRE_I32:
                    floats.append(struct.unpack("<f", v)[0])
            return floats
        if field == 3:  # Int64List (packed or not)
            ints: list[int] = []
            for f, w, v in _iter_fields(value):
                if f != 1:
                    continue
                if w == _WIRE_LEN:
                    p = 0
                    while p < len(v):
                        n, p = _read_varint(v, p)
                        ints.append(_to_signed64(n))
                elif w == _WIRE_VARINT:
                    ints.append(_to_signed64(v))
            return ints
    return []


def decode_example(raw: bytes) -> dict[str, FeatureValue]:
    """All features of a serialized ``tf.train.Example`` as plain Python lists."""
    features: dict[str, FeatureValue] = {}
    for field, wire, value in _iter_fields(raw):
        if field != 1 or wire != _WIRE_LEN:
            continue
        for f, w, entry in _iter_fields(value):
            if f != 1 or w != _WIRE_LEN:
                continue
            key = b""
            feature: FeatureValue = []
            for ef, ew, ev in _iter_fields(entry):
                if ef == 1 and ew == _WIRE_LEN:
                    key = ev
                elif ef == 2 and ew == _WIRE_LEN:
                    feature = _decode_feature(ev)
            try:
                features[key.decode("utf-8")] = feature
            except UnicodeDecodeError as exc:
                raise ExampleDecodeError("feature name is not UTF-8") from exc
    return features


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | _WIRE_LEN) + _varint(len(payload)) + payload


def _bytes_feature(values: list[bytes]) -> bytes:
    return _len_field(1, b"".join(_len_field(1, v) for v in values))


def _int64_feature(values: list[int]) -> bytes:
    return _len_field(3, _len_field(1, b"".join(_varint(v) for v in values)))


def encode_features(features: dict[str, list[bytes] | list[int]]) -> bytes:
    """Serialize bytes / int64 features as a ``tf.train.Example``."""
    entries = []
    for name, values in features.items():
        if values and isinstance(values[0], bytes | bytearray):
            encoded = _bytes_feature([bytes(v) for v in values])  # type: ignore[arg-type]
        else:
            encoded = _int64_feature([int(v) for v in values])  # type: ignore[arg-type]
        entries.append(_len_field(1, _len_field(1, name.encode()) + _len_field(2, encoded)))
    return _len_field(1, b"".join(entries))


def encode_tile(image: np.ndarray, label: int, label_normal: int | None = None) -> bytes:
    """One example in the public schema: raw 299x299 uint8 pixels, ``label``, ``label_normal``."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {pixels.dtype}")
    if pixels.size != IMAGE_BYTES:
        raise ValueError(
            f"image must have {SOURCE_SIZE}x{SOURCE_SIZE} pixels, got shape {pixels.shape}"
        )
    if label_normal is None:
        label_normal = label_normal_of(label)
    return encode_features(
        {
            IMAGE_KEY: [np.ascontiguousarray(pixels).tobytes()],
            LABEL_NORMAL_KEY: [int(label_normal)],
            LABEL_KEY: [int(label)],
        }
    )


@dataclass(frozen=True, slots=True)
class Tile:
    """One decoded record of the public schema; fields are None when missing or malformed."""

    image: bytes | None
    label: int | None
    label_normal: int | None

    @property
    def image_ok(self) -> bool:
        return self.image is not None and len(self.image) == IMAGE_BYTES

    def pixels(self) -> np.ndarray:
        """The tile as a (299, 299) uint8 array; raises ValueError when the size is wrong."""
        if not self.image_ok:
            size = None if self.image is None else len(self.image)
            raise ValueError(f"image has {size} bytes, expected {IMAGE_BYTES}")
        return np.frombuffer(self.image, dtype=np.uint8).reshape(SOURCE_SIZE, SOURCE_SIZE)


def _single(values: FeatureValue | None, kind: type) -> object | None:
    if not values or len(values) != 1 or not isinstance(values[0], kind):
        return None
    return values[0]


def decode_tile(raw: bytes) -> Tile:
    """Decode a record of the public schema; raises ExampleDecodeError if not an Example."""
    features = decode_example(raw)
    image = _single(features.get(IMAGE_KEY), bytes)
    label = _single(features.get(LABEL_KEY), int)
    label_normal = _single(features.get(LABEL_NORMAL_KEY), int)
    return Tile(image=image, label=label, label_normal=label_normal)  # type: ignore[arg-type]
