"""The public release's cv10 and test10 numpy splits are the held-out test set, together."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_pipeline.data.numpy_split import is_public_held_out, load_split, split_to_tfrecords
from mammo_pipeline.errors import DataError


@pytest.mark.parametrize("name", ["cv10", "test10"])
def test_public_held_out_halves_are_never_converted_for_training(tmp_path, name):
    images = np.zeros((2, 299, 299, 1), np.uint8)
    np.save(tmp_path / f"{name}_data.npy", images)
    np.save(tmp_path / f"{name}_labels.npy", np.array([0, 3]))
    split = load_split(tmp_path / f"{name}_data.npy")
    assert is_public_held_out(f"{name}_data.npy")
    with pytest.raises(DataError, match="held-out test set"):
        split_to_tfrecords(split, tmp_path / "out.tfrecords")
    assert not (tmp_path / "out.tfrecords").exists()
    assert split_to_tfrecords(split, tmp_path / "out.tfrecords", allow_held_out=True) == 2


def test_both_halves_are_the_test_set(tmp_path):
    from mammo_pipeline.data.manifest import held_out_files

    for name, labels in (("cv10", [1, 3]), ("test10", [2, 4])):
        np.save(tmp_path / f"{name}_data.npy", np.zeros((2, 299, 299, 1), np.uint8))
        np.save(tmp_path / f"{name}_labels.npy", np.array(labels))
    names = sorted(p.name for p in held_out_files(tmp_path))
    assert names == ["cv10_data.npy", "cv10_labels.npy", "test10_data.npy", "test10_labels.npy"]
