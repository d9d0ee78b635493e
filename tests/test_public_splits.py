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


def test_metrics_per_lesion_type():
    from mammo_pipeline.training.evaluate import per_type_metrics

    labels = np.array([0, 0, 0, 0, 1, 3, 2, 4])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.05, 0.95])
    m = per_type_metrics(labels, scores, threshold=0.5)
    assert m["test_positives_calcification"] == 2 and m["test_positives_mass"] == 2
    assert m["test_recall_calcification"] == 1.0 and m["test_recall_mass"] == 0.5
    assert m["test_roc_auc_calcification"] == pytest.approx(0.75)  # both beat 3 of 4 negatives
    assert m["test_roc_auc_mass"] == pytest.approx(0.5)
