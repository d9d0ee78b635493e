"""The tf.data pipeline: shapes, dtypes, ranges, training-only augmentation, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_pipeline.data.numpy_split import load_split
from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset, numpy_dataset
from mammo_pipeline.errors import DataError


def _files(d):
    return sorted(d.glob("*.tfrecords"))


def _collect(ds):
    batches = [tuple(t.numpy() for t in b) for b in ds]
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)]


def test_shapes_dtypes_ranges(synthetic_dir):
    ds = make_dataset(_files(synthetic_dir), PipelineOptions(image_size=48, batch_size=16))
    images, label_normal = _collect(ds)
    assert images.shape == (120, 48, 48, 1) and images.dtype == np.float32
    assert label_normal.dtype == np.int32 and set(np.unique(label_normal)) == {0, 1}
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.max() > 100


def test_full_size_and_labels(synthetic_dir):
    opts = PipelineOptions(batch_size=8, with_label=True, max_records=8)
    images, label_normal, label = _collect(make_dataset(_files(synthetic_dir), opts))
    assert images.shape == (8, 299, 299, 1)
    assert np.array_equal(label_normal, (label > 0).astype(np.int32))


def test_eval_mode_keeps_pixels_and_order(synthetic_dir):
    """Without training, the pipeline returns the stored pixels unchanged, in file order."""
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.tfrecord_io import iter_records

    first = _files(synthetic_dir)[0]
    stored = [decode_tile(r).pixels() for r in iter_records(first)]
    images, _ = _collect(make_dataset([first], PipelineOptions(batch_size=10)))
    assert np.array_equal(images[..., 0].astype(np.uint8), np.stack(stored))


def test_augmentation_only_in_training_and_deterministic(synthetic_dir):
    files = _files(synthetic_dir)
    base = dict(image_size=32, batch_size=120, shuffle_buffer=1)
    plain = _collect(make_dataset(files, PipelineOptions(**base, augment=True)))[0]
    plain2 = _collect(make_dataset(files, PipelineOptions(**base, augment=False)))[0]
    assert np.array_equal(plain, plain2)  # augment flag is ignored outside training
    # Training without shuffle's effect (buffer 1, one file order): compare augmentation only.
    t1 = _collect(make_dataset(files[:1], PipelineOptions(**base, training=True, seed=1)))[0]
    t2 = _collect(make_dataset(files[:1], PipelineOptions(**base, training=True, seed=1)))[0]
    t3 = _collect(make_dataset(files[:1], PipelineOptions(**base, training=True, seed=2)))[0]
    no_aug = _collect(
        make_dataset(files[:1], PipelineOptions(**base, training=True, augment=False, seed=1))
    )[0]
    assert np.array_equal(t1, t2)
    assert not np.array_equal(t1, t3)
    assert not np.array_equal(t1, no_aug)
    assert t1.min() >= 0 and t1.max() <= 255
    # brightness/contrast are mild: the mean intensity moves by at most ~12 %
    assert abs(t1.mean() - no_aug.mean()) < 0.12 * 255


def test_training_shuffles_deterministically(synthetic_dir):
    files = _files(synthetic_dir)
    opts = PipelineOptions(image_size=16, batch_size=120, training=True, augment=False, seed=5)
    a = _collect(make_dataset(files, opts))[0]
    b = _collect(make_dataset(files, opts))[0]
    ordered = _collect(make_dataset(files, PipelineOptions(image_size=16, batch_size=120)))[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, ordered)


def test_numpy_split_pipeline(synthetic_dir):
    split = load_split(synthetic_dir / "synthetic_test_data.npy")
    images, ln, lab = _collect(
        numpy_dataset(split, PipelineOptions(image_size=64, batch_size=16, with_label=True))
    )
    assert images.shape == (40, 64, 64, 1)
    assert np.array_equal(lab, split.labels) and np.array_equal(ln, split.label_normal)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        make_dataset([tmp_path / "gone.tfrecords"])


def test_group_split_selects_exactly_the_assigned_records(synthetic_dir):
    """With a SplitAssignment, each side holds exactly the records the assignment puts there
    (also with shuffled files in training mode); the old per-tile rule stays the default."""
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.grouped_split import assign_validation
    from mammo_pipeline.data.tfrecord_io import iter_records

    files = _files(synthetic_dir)
    split = assign_validation(files, 0.3, seed=1, progress=False)
    tiles = {True: set(), False: set()}
    for f in files:
        for is_val, raw in zip(split.mask(f), iter_records(f), strict=True):
            tiles[bool(is_val)].add(decode_tile(raw).image)
    for subset, want in (("validation", tiles[True]), ("train", tiles[False])):
        for training in (False, True):
            opts = PipelineOptions(
                batch_size=64, subset=subset, split=split, training=training, augment=False
            )
            images = _collect(make_dataset(files, opts))[0]
            got = [img.astype(np.uint8).tobytes() for img in images]
            assert len(got) == len(want) and set(got) == want, (subset, training)
    old = _collect(make_dataset(files, PipelineOptions(batch_size=64, subset="validation")))[0]
    assert 0 < len(old) < 120
    with pytest.raises(DataError, match="in the train/validation split but not given"):
        make_dataset(files[:2], PipelineOptions(subset="train", split=split))


def test_augmentation_is_exactly_flip_flip_transpose_then_brightness_contrast():
    """The grouped flips give, image by image, exactly the three steps they stand for (left-
    right flip if u0 < 0.5, then up-down if u1 < 0.5, then transpose if u2 < 0.5, then
    brightness / contrast), for every seed tried, at 64 and 299 px."""
    import tensorflow as tf

    from mammo_pipeline.data.pipeline import augment_batch

    def three_steps(images, seed):
        u = tf.random.stateless_uniform([5, tf.shape(images)[0]], seed=seed)

        def pick(mask, a, b):
            return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), a, b)

        images = pick(u[0] < 0.5, tf.reverse(images, axis=[2]), images)
        images = pick(u[1] < 0.5, tf.reverse(images, axis=[1]), images)
        images = pick(u[2] < 0.5, tf.transpose(images, [0, 2, 1, 3]), images)
        brightness = tf.reshape((u[3] - 0.5) * 0.2 * 255.0, [-1, 1, 1, 1])
        contrast = tf.reshape(0.9 + 0.2 * u[4], [-1, 1, 1, 1])
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        return tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 255.0)

    rng = np.random.default_rng(0)
    for size in (64, 299):
        images = tf.constant(rng.uniform(0, 255, (16, size, size, 1)).astype(np.float32))
        for s in range(12):
            seed = tf.constant([s, 3 * s + 1], tf.int64)
            np.testing.assert_array_equal(
                augment_batch(images, seed).numpy(), three_steps(images, seed).numpy()
            )


def test_prepare_image_skips_only_the_clipping_that_cannot_change_a_pixel() -> None:
    """8-bit pixels at the model's size are returned as float32 without a clipping pass
    (they are in 0..255 by their type); float input at that size is still clipped, and a
    resized 8-bit input stays in 0..255."""
    from mammo_pipeline.data.preprocess import prepare_image

    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    same = np.asarray(prepare_image(gray, 16))
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, gray.astype(np.float32))
    floats = np.array([[[-5.0], [300.0]], [[10.0], [20.0]]], np.float32)  # 2 x 2 x 1
    np.testing.assert_array_equal(
        np.asarray(prepare_image(floats, 2)), [[[0.0], [255.0]], [[10.0], [20.0]]]
    )
    resized = np.asarray(prepare_image(gray, 8))
    assert resized.shape == (2, 8, 8, 1) and resized.min() >= 0.0 and resized.max() <= 255.0
