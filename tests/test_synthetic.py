import json

import numpy as np

from mammo_pipeline.data.inspect import summarize
from mammo_pipeline.data.numpy_split import load_split
from mammo_pipeline.data.synthetic import generate, make_labels, make_tile


def test_labels_are_consistent_and_balanced(synthetic_dir):
    summaries = [summarize(p) for p in sorted(synthetic_dir.glob("*.tfrecords"))]
    assert sum(s.records for s in summaries) == 120
    assert all(s.problem_count == 0 for s in summaries)
    positives = sum(s.label_normal_counts.get(1, 0) for s in summaries)
    assert positives == 30  # exactly 25 % of 120
    lesion_types = {k for s in summaries for k in s.label_counts if k > 0}
    assert lesion_types == {1, 2, 3, 4}
    meta = json.loads((synthetic_dir / "synthetic_dataset.json").read_text())
    assert meta["synthetic"] is True
    test = load_split(synthetic_dir / "synthetic_test_data.npy")
    assert len(test) == 40 and int(test.label_normal.sum()) == 10


def test_requested_class_balance():
    for n, f in [(1000, 0.14), (57, 0.5), (10, 0.0)]:
        labels = make_labels(n, f, seed=1, split="train")
        assert (labels > 0).sum() == round(n * f)


def test_deterministic_by_seed_and_independent_of_file_split(tmp_path):
    a = generate(tmp_path / "a", 12, files=1, seed=3, progress=False)
    b = generate(tmp_path / "b", 12, files=3, seed=3, progress=False)
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.tfrecord_io import iter_records

    def tiles(ds):
        return [decode_tile(r).image for f in ds.train_files for r in iter_records(f)]

    assert tiles(a) == tiles(b)
    assert not np.array_equal(make_tile(3, "train", 0, 0), make_tile(4, "train", 0, 0))


def test_lesions_are_visible_and_local():
    """Same seed and index: the tissue is identical and the lesion is the only difference,
    bright and confined to a small region, so a model has a real signal to learn."""
    for i in range(10):
        neg = make_tile(0, "train", i, 0).astype(float)
        for label in (1, 2, 3, 4):
            diff = make_tile(0, "train", i, label).astype(float) - neg
            assert diff.max() >= 25, (i, label)
            assert (diff > 5).mean() < 0.15, (i, label)
            assert diff.min() >= -1  # lesions only add density
