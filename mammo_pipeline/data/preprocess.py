"""Tile -> model input, shared by training, evaluation and serving (one copy only).

Whole films are first prepared by :mod:`mammo_pipeline.imaging.preprocess` (the one path
from any format to 8-bit tiles at the training scale); this module holds the TF op that
turns a tile into the model input (:func:`prepare_image`) and the rule that brings an
uploaded TILE to 8 bits (:func:`to_uint8_gray`, see that module's docstring).

Contract of the model input: float32, one channel, ``image_size`` x ``image_size``, raw
intensity scale 0..255. VGG16's own preprocessing (channel repeat, mean subtraction) lives
inside the model, so anything that can produce this tensor can call the model.
"""

from __future__ import annotations

import numpy as np

from mammo_pipeline.data.schema import CHANNELS
from mammo_pipeline.imaging.preprocess import luma

#: Resizing method used everywhere (bilinear with antialiasing when shrinking).
RESIZE_METHOD = "bilinear"


def prepare_image(image, image_size: int):
    """uint8 (or float 0..255) H x W x 1 tensor -> float32 image_size x image_size x 1 in 0..255.

    Works on a single image or a batch (N x H x W x 1); uses TensorFlow ops so it runs
    inside ``tf.data`` graphs and eagerly in the serving process alike.
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    img = tf.cast(image, tf.float32)
    shape = img.shape
    if shape[-3] != image_size or shape[-2] != image_size:
        img = tf.image.resize(img, [image_size, image_size], method=RESIZE_METHOD, antialias=True)
    elif image.dtype == tf.uint8:
        return img  # 8-bit pixels at the model's size are in 0..255 already: no clipping pass
    return tf.clip_by_value(img, 0.0, 255.0)


def to_uint8_gray(pixels: np.ndarray) -> np.ndarray:
    """Any 2-D or H x W x C integer/float array -> H x W x 1 uint8 grayscale: the TILE rule
    (films go through :func:`mammo_pipeline.imaging.preprocess.prepare_film` instead).

    16-bit data is scaled to 8 bits by its dtype's full range, floats are taken as 0..1 when
    their maximum is <= 1 else as 0..255; colour is converted with ITU-R 601 luma weights.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = luma(arr)
        arr = arr.astype(pixels.dtype) if np.issubdtype(pixels.dtype, np.integer) else arr
    if arr.ndim == 3 and arr.shape[-1] == CHANNELS:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale or H x W x 1/3/4 image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        out = np.clip(arr, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError("image contains NaN or infinite values")
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        out = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported pixel dtype {arr.dtype}")
    return out[..., np.newaxis]
