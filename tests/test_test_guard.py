"""Test-set protection: landing files holding held-out test tiles (or near-copies) are
quarantined with a reason naming the test tile; clean files pass. Real SYNTHETIC files, the
real GX context in ``expectations/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.near_duplicates import perceptual_hashes
from mammo_pipeline.data.synthetic import dihedral, generate, make_tile
from mammo_pipeline.data.tfrecord_io import iter_records, write_records
from mammo_pipeline.validation import test_guard as tg
from mammo_pipeline.validation.run import validate_landing

TEST_FILE = "synthetic_test_data.npy"


def _shifted_flip(tile: np.ndarray) -> np.ndarray:
    """A near-copy: the same region shifted by (6, -4) pixels (edges replicated), then
    flipped left-right and rotated (dihedral transform 5)."""
    shifted = np.pad(tile, ((6, 0), (0, 4)), mode="edge")[:299, 4:]
    return np.ascontiguousarray(dihedral(shifted, 5))


@pytest.fixture(scope="module")
def landing_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("guard")
    ds = generate(
        root / "generated", 40, files=2, positive_fraction=0.25, seed=3, test_n=24, progress=False
    )
    settings = Settings(data_dir=root, validation_workers=1)
    settings.test_split.mkdir(parents=True)
    settings.landing.mkdir(parents=True)
    for p in (ds.test_data, ds.test_labels):
        shutil.move(p, settings.test_split / Path(p).name)
    test = np.load(settings.test_split / TEST_FILE)[..., 0]
    labels = np.load(settings.test_split / "synthetic_test_labels.npy")
    records = list(iter_records(ds.train_files[0]))
    shutil.copy(ds.train_files[1], settings.landing / "clean.tfrecords")
    exact = list(records)
    exact[3] = encode_tile(test[5], int(labels[5]))
    write_records(settings.landing / "exact_copy.tfrecords", exact)
    near = list(records)
    near[11] = encode_tile(_shifted_flip(test[7]), int(labels[7]))
    write_records(settings.landing / "near_copy.tfrecords", near)
    result = validate_landing(settings)
    return settings, {f.file: f for f in result.files}


def _reason(settings: Settings, name: str) -> dict:
    return json.loads((settings.quarantine / f"{name}.reason.json").read_text())


def test_clean_file_passes(landing_run) -> None:
    settings, results = landing_run
    assert results["clean.tfrecords"].verdict == "passed", results["clean.tfrecords"].message
    assert (settings.validated / "clean.tfrecords").is_file()


@pytest.mark.parametrize(
    ("name", "record", "value"),
    [
        ("exact_copy.tfrecords", 3, f"{TEST_FILE}#5 (exact copy)"),
        ("near_copy.tfrecords", 11, f"{TEST_FILE}#7 (distance "),
    ],
)
def test_file_with_a_test_tile_is_quarantined_naming_it(landing_run, name, record, value) -> None:
    settings, results = landing_run
    result = results[name]
    assert result.verdict == "quarantined"
    assert (settings.quarantine / name).is_file()
    reason = _reason(settings, name)
    failed = [f for f in reason["failed_expectations"] if f["column"] == "near_test_copy"]
    assert len(reason["failed_expectations"]) == 1 and len(failed) == 1, reason
    assert failed[0]["unexpected_count"] == 1
    (example,) = failed[0]["examples"]
    assert example["record"] == record
    assert example["value"].startswith(value)
    assert f"record {record} = {TEST_FILE}#" in result.message
    assert "expected no match" in failed[0]["message"]


def test_index_is_built_once_and_cached_on_disk(landing_run, monkeypatch) -> None:
    settings, _ = landing_run
    (cached,) = (settings.reports / tg.CACHE_DIR).glob("*.npz")
    tg._MEMO.clear()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(tg, "build_guard", no_rebuild)
    guard = tg.load_guard(settings)
    assert len(guard) == 24 and guard.files == (TEST_FILE,)
    assert tg.load_guard(settings) is guard  # then from memory
    assert guard.key == cached.stem


def test_nearest_names_test_file_index_and_distance(landing_run) -> None:
    settings, _ = landing_run
    guard = tg.load_guard(settings)
    test = np.load(settings.test_split / TEST_FILE)[..., 0]
    queries = np.stack([dihedral(test[2], 3), _shifted_flip(test[9]), make_tile(99, "cv", 0, 0)])
    found = guard.nearest(perceptual_hashes(queries))
    assert found[0] == (TEST_FILE, 2, 0)
    assert found[1] is not None and found[1][:2] == (TEST_FILE, 9)
    assert 0 <= found[1][2] <= guard.max_distance
    assert found[2] is None


def test_no_test_split_means_an_empty_index(tmp_path: Path) -> None:
    guard = tg.load_guard(Settings(data_dir=tmp_path))
    assert len(guard) == 0
    assert guard.nearest(perceptual_hashes(make_tile(0, "train", 0, 0))) == [None]
