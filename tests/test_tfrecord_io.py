"""The data layer reads and writes the public schema bit-exactly, with and without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mammo_pipeline.data.example_codec import decode_tile, encode_tile
from mammo_pipeline.data.numpy_split import load_split, split_to_tfrecords
from mammo_pipeline.data.tfrecord_io import (
    count_records,
    detect_compression,
    iter_records,
    write_records,
)
from mammo_pipeline.errors import CorruptRecordError, DataError
from tests.conftest import make_tiles


def _write_public_style(path, images, labels, compression=""):
    """Exactly how the public data set's files were made: tf.train.Example via TF's writer."""
    opts = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(str(path), opts) as w:
        for img, lab in zip(images, labels, strict=True):
            ex = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[lab])),
                        "label_normal": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[int(lab > 0)])
                        ),
                        "image": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[img.tobytes()])
                        ),
                    }
                )
            )
            w.write(ex.SerializeToString())


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_round_trip_is_bit_exact(tmp_path, compression):
    images, labels = make_tiles(7)
    path = tmp_path / "x.tfrecords"
    n = write_records(
        path,
        (encode_tile(i, int(lab)) for i, lab in zip(images, labels, strict=False)),
        compression=compression,
    )
    assert n == 7
    assert detect_compression(path) == compression
    assert count_records(path) == 7
    tiles = [decode_tile(r) for r in iter_records(path)]
    for tile, img, lab in zip(tiles, images, labels, strict=True):
        assert np.array_equal(tile.pixels(), img)
        assert tile.label == lab and tile.label_normal == int(lab > 0)


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_tensorflow_reads_our_files_and_we_read_tensorflows(tmp_path, compression):
    images, labels = make_tiles(5, seed=3)
    ours = tmp_path / "ours.tfrecords"
    write_records(
        ours,
        (encode_tile(i, int(lab)) for i, lab in zip(images, labels, strict=False)),
        compression=compression,
    )
    for i, raw in enumerate(tf.data.TFRecordDataset(str(ours), compression_type=compression)):
        ex = tf.train.Example.FromString(raw.numpy())
        f = ex.features.feature
        assert f["image"].bytes_list.value[0] == images[i].tobytes()
        assert f["label"].int64_list.value[0] == labels[i]
    theirs = tmp_path / "theirs.tfrecords"
    _write_public_style(theirs, images, labels, compression)
    tiles = [decode_tile(r) for r in iter_records(theirs)]
    assert [t.label for t in tiles] == list(labels)
    assert all(np.array_equal(t.pixels(), img) for t, img in zip(tiles, images, strict=True))


def test_corruption_is_reported_with_the_record_index(tmp_path):
    images, labels = make_tiles(3)
    path = tmp_path / "x.tfrecords"
    write_records(path, (encode_tile(i, int(lab)) for i, lab in zip(images, labels, strict=False)))
    data = bytearray(path.read_bytes())
    record_len = len(data) // 3
    data[record_len + 500] ^= 0xFF  # a pixel of record 1
    flipped = tmp_path / "flipped.tfrecords"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="record 1: data checksum mismatch"):
        list(iter_records(flipped))
    truncated = tmp_path / "truncated.tfrecords"
    truncated.write_bytes(path.read_bytes()[: record_len * 2 + 100])
    with pytest.raises(CorruptRecordError, match="record 2: truncated"):
        list(iter_records(truncated))
    with pytest.raises(DataError, match="no such file"):
        list(iter_records(tmp_path / "missing.tfrecords"))


def test_random_bytes_are_not_records(tmp_path):
    junk = tmp_path / "junk.tfrecords"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CorruptRecordError):
        list(iter_records(junk))


def test_numpy_split_converts_and_reads_back(tmp_path):
    images, labels = make_tiles(6, seed=1)
    np.save(tmp_path / "test_data.npy", images[..., None])
    np.save(tmp_path / "test_labels.npy", labels)
    split = load_split(tmp_path / "test_data.npy")
    assert len(split) == 6 and split.images.shape == (6, 299, 299, 1)
    out = tmp_path / "test.tfrecords"
    assert split_to_tfrecords(split, out, compression="GZIP") == 6
    tiles = [decode_tile(r) for r in iter_records(out)]
    assert [t.label for t in tiles] == list(labels)
    assert [t.label_normal for t in tiles] == [int(lab > 0) for lab in labels]
    assert np.array_equal(tiles[4].pixels(), images[4])


@pytest.mark.parametrize(
    "images,labels,match",
    [
        (np.zeros((2, 299, 299, 1), np.float32), np.array([0, 1]), "must be uint8"),
        (np.zeros((2, 64, 64, 1), np.uint8), np.array([0, 1]), "N x 299 x 299 x 1"),
        (np.zeros((2, 299, 299, 1), np.uint8), np.array([0, 1, 2]), "3 labels for 2 images"),
        (np.zeros((2, 299, 299, 1), np.uint8), np.array([0, 7]), r"outside 0..4: \[7\]"),
    ],
)
def test_bad_numpy_splits_are_named(tmp_path, images, labels, match):
    np.save(tmp_path / "cv_data.npy", images)
    np.save(tmp_path / "cv_labels.npy", labels)
    with pytest.raises(DataError, match=match):
        load_split(tmp_path / "cv_data.npy")
