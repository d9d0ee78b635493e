"""The ``tf.data`` input pipeline for training and evaluation.

files -> interleave(TFRecordDataset, per-file compression detected) -> [take max_records]
      -> [subset] -> [cache raw records] -> [shuffle] -> batch
      -> parse + decode + resize per batch -> [training-only augmentation, seeded] -> prefetch

``subset="train"|"validation"`` keeps one side of a deterministic split. With
``PipelineOptions.split`` (a :class:`~mammo_pipeline.data.grouped_split.SplitAssignment`)
the side of every record is looked up in the assignment's per-file masks, so near-duplicate
groups never straddle the split; without it, the old per-tile rule hashes each record's
image bytes (:func:`in_subset`), which leaks near-copies of a region across the split.

Elements are ``(image, label_normal)`` or, with ``with_label=True``,
``(image, label_normal, label)``: ``image`` float32 (B, S, S, 1) in 0..255,
labels int32 (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mammo_pipeline.data.grouped_split import SplitAssignment
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
    #: "all", or one side of the deterministic split (``split``, else :func:`in_subset`).
    subset: Literal["all", "train", "validation"] = "all"
    val_fraction: float = 0.15  # used by the per-tile rule only (``split`` has its own)
    #: Per-record sides made per near-duplicate group (for exactly the files given).
    split: SplitAssignment | None = None
    #: The exact number of records after capping and filtering, when the caller has counted
    #: them: the dataset then has a known length (Keras shows the epoch's length and does not
    #: warn "Your input ran out of data" each first epoch), and a different count is an error.
    records: int | None = None


def _feature_spec():
    import tensorflow as tf

    return {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_NORMAL_KEY: tf.io.FixedLenFeature([], tf.int64),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }


def parse_and_decode_batch(serialized, image_size: int):
    """A batch of serialized Examples -> (images B x S x S x 1 float32, label_normal, label).

    Parsing, decoding and resizing whole batches is several times faster than per record.
    """
    import tensorflow as tf

    feats = tf.io.parse_example(serialized, _feature_spec())
    pixels = tf.io.decode_raw(feats[IMAGE_KEY], tf.uint8)
    pixels = tf.reshape(pixels, [-1, SOURCE_SIZE, SOURCE_SIZE, CHANNELS])
    return (
        prepare_image(pixels, image_size),
        tf.cast(feats[LABEL_NORMAL_KEY], tf.int32),
        tf.cast(feats[LABEL_KEY], tf.int32),
    )


#: Hash buckets of the content-based split; ``val_fraction`` is resolved to 1/1000.
SPLIT_BUCKETS = 1000


def in_subset(serialized, subset: str, val_fraction: float):
    """True when a serialized Example belongs to ``subset`` ("train" / "validation").

    The split hashes the record's image bytes, so a tile always lands on the same side
    whatever file it is in, however files are ordered and as new files arrive.
    """
    import tensorflow as tf

    if subset == "all":
        return tf.constant(True)
    image = tf.io.parse_single_example(
        serialized, {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    )[IMAGE_KEY]
    bucket = tf.strings.to_hash_bucket_fast(image, SPLIT_BUCKETS)
    is_val = bucket < int(round(val_fraction * SPLIT_BUCKETS))
    if subset == "validation":
        return is_val
    if subset == "train":
        return tf.logical_not(is_val)
    raise ValueError(f"subset must be 'all', 'train' or 'validation', got {subset!r}")


def augment_batch(images, seed):
    """Random dihedral transform (flips + 90-degree rotations) and mild brightness/contrast,
    drawn independently per image from a stateless ``seed`` (shape [2])."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    u = tf.random.stateless_uniform([5, n], seed=seed)
    # left-right flip if u0, then up-down flip if u1, then transpose if u2 (with the flips:
    # quarter turns), done per group of images sharing a combination: each image is moved
    # once per step it needs, not selected from a transformed copy of the batch three times
    # (same pixels, half the time)
    which = (
        tf.cast(u[0] < 0.5, tf.int32)
        + 2 * tf.cast(u[1] < 0.5, tf.int32)
        + 4 * tf.cast(u[2] < 0.5, tf.int32)
    )
    groups = tf.dynamic_partition(images, which, 8)
    rows = tf.dynamic_partition(tf.range(n), which, 8)
    for k in range(8):
        if k & 1:
            groups[k] = tf.reverse(groups[k], axis=[2])
        if k & 2:
            groups[k] = tf.reverse(groups[k], axis=[1])
        if k & 4:
            groups[k] = tf.transpose(groups[k], [0, 2, 1, 3])
    images = tf.dynamic_stitch(rows, groups)
    brightness = tf.reshape((u[3] - 0.5) * 0.2 * 255.0, [-1, 1, 1, 1])  # +-10 %
    contrast = tf.reshape(0.9 + 0.2 * u[4], [-1, 1, 1, 1])  # x0.9..1.1
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * contrast + mean + brightness
    return tf.clip_by_value(images, 0.0, 255.0)


def _finish(ds, opts: PipelineOptions, decode_batch):
    """cache -> shuffle -> batch -> decode (vectorised) -> augment -> prefetch.

    The cache holds the compact undecoded elements (89 kB per tile, 4x less than decoded
    299 px float32), so caching the full public training set stays within memory.
    """
    import tensorflow as tf

    if opts.records:
        ds = ds.apply(tf.data.experimental.assert_cardinality(opts.records))
    if opts.cache == "memory":
        ds = ds.cache()
    elif opts.cache not in ("none", "", None):
        Path(opts.cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(opts.cache))
    if opts.training:
        ds = ds.shuffle(opts.shuffle_buffer, seed=opts.seed, reshuffle_each_iteration=True)
    ds = ds.batch(opts.batch_size, drop_remainder=opts.drop_remainder)
    augment = opts.training and opts.augment

    def decode(*batch):
        out = decode_batch(*batch)
        # without augmentation the label is dropped here: one parallel map, no extra stage
        return out if augment or opts.with_label else out[:2]

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment:
        seeds = tf.data.Dataset.random(seed=opts.seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (
                augment_batch(batch[0], s),
                *batch[1 : None if opts.with_label else 2],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _split_filter(ds, paths: list[str], split: SplitAssignment, subset: str):
    """Keep the records of ``(record, file id, index in file)`` elements on ``subset``'s side
    of ``split``: one flat boolean constant, indexed by file offset + record index."""
    import numpy as np
    import tensorflow as tf

    if subset not in ("train", "validation"):
        raise ValueError(f"subset must be 'all', 'train' or 'validation', got {subset!r}")
    masks = [split.mask(p) for p in paths]
    offsets = tf.constant(np.concatenate([[0], np.cumsum([m.size for m in masks])[:-1]]), tf.int64)
    flat = tf.constant(np.concatenate(masks) if masks else np.zeros(0, bool), tf.bool)
    want = subset == "validation"
    return ds.filter(lambda rec, f, i: tf.equal(tf.gather(flat, offsets[f] + i), want))


def _records(files: Sequence[Path | str], opts: PipelineOptions):
    """Serialized records of ``files`` (interleaved, capped, filtered to ``opts.subset``)."""
    import tensorflow as tf

    paths = [str(p) for p in files]
    if not paths:
        raise DataError(None, "no tfrecord files given to the input pipeline")
    for p in paths:
        if not Path(p).is_file():
            raise DataError(p, "no such file")
    compressions = [detect_compression(Path(p)) for p in paths]
    by_group = opts.split is not None and opts.subset != "all"
    if by_group:
        opts.split.check_files(paths)  # type: ignore[union-attr]
    files_ds = tf.data.Dataset.from_tensor_slices(
        (paths, compressions, tf.range(len(paths), dtype=tf.int64))
    )
    if opts.training:
        files_ds = files_ds.shuffle(len(paths), seed=opts.seed, reshuffle_each_iteration=True)

    def read(p, c, f):
        records = tf.data.TFRecordDataset(p, compression_type=c)
        if not by_group:
            return records
        # (record, file id, index in file): the index survives interleaving and shuffling.
        return records.enumerate().map(lambda i, rec: (rec, f, i))

    ds = files_ds.interleave(
        read,
        cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if opts.max_records:
        ds = ds.take(opts.max_records)
    if by_group:
        ds = _split_filter(ds, paths, opts.split, opts.subset)  # type: ignore[arg-type]
        ds = ds.map(lambda rec, f, i: rec)
    elif opts.subset != "all":
        ds = ds.filter(lambda s: in_subset(s, opts.subset, opts.val_fraction))
    return ds


def make_dataset(files: Sequence[Path | str], opts: PipelineOptions | None = None):
    """A batched ``tf.data.Dataset`` over tfrecord files in the public schema."""

    opts = opts or PipelineOptions()
    return _finish(
        _records(files, opts), opts, lambda s: parse_and_decode_batch(s, opts.image_size)
    )


def read_labels(files: Sequence[Path | str], opts: PipelineOptions | None = None):
    """The 5-class ``label`` of each record ``opts`` selects, in evaluation order, without
    decoding any image (``max_records`` and ``subset`` are honoured exactly as in
    :func:`make_dataset` with ``training=False``, so the order matches its batches)."""
    import numpy as np
    import tensorflow as tf

    opts = opts or PipelineOptions()
    spec = {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    ds = _records(files, opts).map(
        lambda s: tf.io.parse_single_example(s, spec)[LABEL_KEY],
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    batches = [b.numpy() for b in ds.batch(4096)]
    return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)


def label_counts(files: Sequence[Path | str], opts: PipelineOptions | None = None):
    """``{label: count}`` of the records ``opts`` selects (for class weights)."""
    import numpy as np

    values, counts = np.unique(read_labels(files, opts), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


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
    return _finish(ds, opts, lambda img, ln, lab: (prepare_image(img, opts.image_size), ln, lab))
