import json

import numpy as np

from mammo_pipeline.data.inspect import summarize
from mammo_pipeline.data.numpy_split import load_split
from mammo_pipeline.data.provenance import SYNTHETIC, file_provenance
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
    # the held-out arrays declare themselves: a figure made from them says SYNTHETIC
    for name in ("synthetic_test_data.npy", "synthetic_test_labels.npy"):
        assert file_provenance(synthetic_dir / name) == SYNTHETIC


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


def _tiles(files):
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.tfrecord_io import iter_records

    decoded = [decode_tile(r) for f in files for r in iter_records(f)]
    return np.stack([t.pixels() for t in decoded]), np.array([t.label for t in decoded])


def test_one_view_per_lesion_gives_the_single_view_tiles(tmp_path):
    ds = generate(
        tmp_path, 16, files=2, positive_fraction=0.5, seed=8, views_per_lesion=1, progress=False
    )
    tiles, labels = _tiles(ds.train_files)
    assert labels.tolist() == make_labels(16, 0.5, seed=8, split="train").tolist()
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        assert np.array_equal(tile, make_tile(8, "train", i, int(label)))


def test_positives_are_near_duplicate_views_of_fewer_lesions(tmp_path):
    """Each positive lesion is written as up to 4 views (shifted crops, flipped/rotated):
    distinct tiles that the near-duplicate hash joins; the test split has its own lesions."""
    from mammo_pipeline.data.near_duplicates import (
        DEFAULT_MAX_DISTANCE,
        group_tiles,
        pairwise_distances,
        perceptual_hashes,
    )
    from mammo_pipeline.data.synthetic import plan_records

    ds = generate(tmp_path, 48, files=3, positive_fraction=0.25, seed=9, test_n=16, progress=False)
    plan = plan_records(48, 0.25, 9, "train", 4)
    assert ds.train_lesions == 3 and ds.test_lesions == 1 and ds.views_per_lesion == 4
    tiles, labels = _tiles(ds.train_files)
    assert labels.tolist() == plan.labels.tolist() and (labels > 0).sum() == 12
    pos = np.flatnonzero(labels > 0)
    groups = group_tiles(perceptual_hashes(tiles))
    for lesion in range(3):
        members = np.flatnonzero(plan.lesions == lesion)
        assert len(members) == 4 and len(set(labels[members].tolist())) == 1
        assert len({tiles[m].tobytes() for m in members}) == 4  # no exact duplicates
        assert len(set(groups[members].tolist())) == 1  # ... but one near-duplicate group
    assert len(set(groups[pos].tolist())) == 3
    test = load_split(ds.test_data)
    d = pairwise_distances(perceptual_hashes(test.images), perceptual_hashes(tiles))
    assert d.min() > DEFAULT_MAX_DISTANCE  # no test tile is a view of a training lesion
