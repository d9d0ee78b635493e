"""The ``tf.data`` input pipeline for training and evaluation.

files -> interleave(TFRecordDataset, per-file compression detected) -> [take max_records]
      -> parallel parse + decode + resize -> [cache] -> [shuffle] -> batch
      -> [training-only augmentation, vectorised and seeded] -> prefetch

Elements are ``(image, label_normal)`` or, with ``with_label=True``,
``(image, label_normal, label)``: ``image`` float32 (B, S, S, 1) in 0..255,
labels int32 (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mammo_pipeline.data.numpy_split import NumpySplit
from mammo_pipeline.data.preprocess import prepare_image
from mammo_pipeline.data.schema import (
    CHANNELS,
    IMAGE_KEY,
    LABEL_KEY,
    LABEL_NORMAL_KEY,
    SOURCE_SIZE,
)
from mammo_pipeline.data.tfrecord_io import detect_compression
from mammo_pipeline.errors import DataError


@dataclass(frozen=True)
class PipelineOptions:
    image_size: int = SOURCE_SIZE
    batch_size: int = 32
    training: bool = False
    augment: bool = True  # only ever applied when training
    cache: Literal["none", "memory"] | str = "none"  # or a file path prefix for a disk cache
    shuffle_buffer: int = 2048
    seed: int = 42
    with_label: bool = False
    max_records: int | None = None
    drop_remainder: bool = False


def _feature_spec():
    import tensorflow as tf

    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_NORMAL_KEY: tf.io.FixedLenFeature([], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }


def parse_and_decode(serialized, image_size: int):
    """One serialized Example -> (image float32 S x S x 1, label_normal int32, label int32)."""
    import tensorflow as tf

    feats = tf.io.parse_single_example(serialized, _feature_spec())
    pixels = tf.io.decode_raw(feats[IMAGE_KEY], tf.uint8)
    pixels = tf.reshape(pixels, [SOURCE_SIZE, SOURCE_SIZE, CHANNELS])
    image = prepare_image(pixels, image_size)
    return (
        image,
        tf.cast(feats[LABEL_NORMAL_KEY], tf.int32),
        tf.cast(feats[LABEL_KEY], tf.int32),
    )


def augment_batch(images, seed):
    """Random dihedral transform (flips + 90-degree rotations) and mild brightness/contrast,
    drawn independently per image from a stateless ``seed`` (shape [2])."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    u = tf.random.stateless_uniform([5, n], seed=seed)

    def pick(mask, a, b):
        return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), a, b)

    images = pick(u[0] < 0.5, tf.reverse(images, axis=[2]), images)  # left-right
    images = pick(u[1] < 0.5, tf.reverse(images, axis=[1]), images)  # up-down
    images = pick(u[2] < 0.5, tf.transpose(images, [0, 2, 1, 3]), images)  # with flips: rot90
    brightness = tf.reshape((u[3] - 0.5) * 0.2 * 255.0, [-1, 1, 1, 1])  # +-10 %
    contrast = tf.reshape(0.9 + 0.2 * u[4], [-1, 1, 1, 1])  # x0.9..1.1
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * contrast + mean + brightness
    return tf.clip_by_value(images, 0.0, 255.0)


def _finish(ds, opts: PipelineOptions, cardinality_known: bool = False):
    import tensorflow as tf

    if opts.cache == "memory":
        ds = ds.cache()
    elif opts.cache not in ("none", "", None):
        Path(opts.cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(opts.cache))
    if opts.training:
        ds = ds.shuffle(opts.shuffle_buffer, seed=opts.seed, reshuffle_each_iteration=True)
    ds = ds.batch(opts.batch_size, drop_remainder=opts.drop_remainder)
    if opts.training and opts.augment:
        seeds = tf.data.Dataset.random(seed=opts.seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (augment_batch(batch[0], s), *batch[1:]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if not opts.with_label:
        ds = ds.map(lambda image, label_normal, label: (image, label_normal))
    return ds.prefetch(tf.data.AUTOTUNE)


def make_dataset(files: Sequence[Path | str], opts: PipelineOptions | None = None):
    """A batched ``tf.data.Dataset`` over tfrecord files in the public schema."""
    import tensorflow as tf

    opts = opts or PipelineOptions()
    paths = [str(p) for p in files]
    if not paths:
        raise DataError(None, "no tfrecord files given to the input pipeline")
    for p in paths:
        if not Path(p).is_file():
            raise DataError(p, "no such file")
    compressions = [detect_compression(Path(p)) for p in paths]
    files_ds = tf.data.Dataset.from_tensor_slices((paths, compressions))
    if opts.training:
        files_ds = files_ds.shuffle(len(paths), seed=opts.seed, reshuffle_each_iteration=True)
    ds = files_ds.interleave(
        lambda p, c: tf.data.TFRecordDataset(p, compression_type=c),
        cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if opts.max_records:
        ds = ds.take(opts.max_records)
    ds = ds.map(
        lambda s: parse_and_decode(s, opts.image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return _finish(ds, opts)


def numpy_dataset(split: NumpySplit, opts: PipelineOptions | None = None):
    """The same element structure over a memory-mapped numpy split (cv / test form)."""
    import numpy as np
    import tensorflow as tf

    opts = opts or PipelineOptions()
    n = len(split) if opts.max_records is None else min(len(split), opts.max_records)

    def gen():
        for i in range(n):
            lab = int(split.labels[i])
            yield np.asarray(split.images[i]), np.int32(lab > 0), np.int32(lab)

    sig = (
        tf.TensorSpec([SOURCE_SIZE, SOURCE_SIZE, CHANNELS], tf.uint8),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32),
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    ds = ds.map(
        lambda img, ln, lab: (prepare_image(img, opts.image_size), ln, lab),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return _finish(ds, opts)
