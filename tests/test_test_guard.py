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
from mammo_pipeline.data.near_duplicates import group_tiles, perceptual_hashes
from mammo_pipeline.data.ring_descriptors import ring_spectra
from mammo_pipeline.data.synthetic import dihedral, generate, make_tile
from mammo_pipeline.data.tfrecord_io import iter_records, write_records
from mammo_pipeline.data.tile_views import add_noise, invert, jpeg, rotate_scale
from mammo_pipeline.validation import test_guard as tg
from mammo_pipeline.validation.run import validate_landing

TEST_FILE = "synthetic_test_data.npy"
#: Landing files holding one altered copy of a test tile (issue #18: none was caught):
#: name -> (record replaced, test tile copied, how it is altered).
ALTERED = {
    "rotated_copy.tfrecords": (4, 3, lambda t: rotate_scale(t, 23.0)),
    "shrunk_copy.tfrecords": (8, 12, lambda t: rotate_scale(t, scale=0.9)),
    "enlarged_copy.tfrecords": (15, 16, lambda t: rotate_scale(t, scale=1.15)),
    "inverted_copy.tfrecords": (2, 20, invert),
}


def _shifted_flip(tile: np.ndarray) -> np.ndarray:
    """A near-copy: the same region shifted by (6, -4) pixels (edges replicated), then
    flipped left-right and rotated (dihedral transform 5)."""
    shifted = np.pad(tile, ((6, 0), (0, 4)), mode="edge")[:299, 4:]
    return np.ascontiguousarray(dihedral(shifted, 5))


@pytest.fixture(scope="module")
def landing_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("guard")
    ds = generate(
        root / "generated", 120, files=6, positive_fraction=0.25, seed=3, test_n=24, progress=False
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
    for spare, (name, (record, source, alter)) in enumerate(ALTERED.items(), start=2):
        altered = list(iter_records(ds.train_files[spare]))  # records no other file holds
        altered[record] = encode_tile(alter(test[source]), int(labels[source]))
        write_records(settings.landing / name, altered)
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


@pytest.mark.parametrize("name", sorted(ALTERED))
def test_rotated_rescaled_or_inverted_copy_is_quarantined(landing_run, name) -> None:
    """Through validation: a file holding a test tile rotated by 23 deg, rescaled by 0.9 or
    1.15, or inverted is quarantined, the reason naming the test tile."""
    settings, results = landing_run
    record, source, _ = ALTERED[name]
    assert results[name].verdict == "quarantined", results[name].message
    (failed,) = [f for f in _reason(settings, name)["failed_expectations"]]
    assert failed["column"] == "near_test_copy" and failed["unexpected_count"] == 1
    (example,) = failed["examples"]
    assert example["record"] == record
    assert example["value"].startswith(f"{TEST_FILE}#{source} (rotated/rescaled/inverted view")


def _views(tiles: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every kind of view the guard must catch, of each tile (small angles as in issue #18,
    any angle, both ends of the rescale range, both fills, and everything at once)."""
    rng = np.random.default_rng(seed)
    n = len(tiles)
    angles = rng.uniform(5, 45, n)
    any_angle = rng.uniform(0, 360, n)
    scales = np.exp(rng.uniform(np.log(0.8), np.log(1.25), n))
    shifts = rng.integers(-12, 13, (n, 2))

    def each(f) -> np.ndarray:
        return np.stack([f(i, t) for i, t in enumerate(tiles)])

    return {
        "rotated 5-45 deg": each(lambda i, t: rotate_scale(t, angles[i])),
        "rotated, black corners": each(lambda i, t: rotate_scale(t, any_angle[i], fill="constant")),
        "rescaled 0.8": each(lambda i, t: rotate_scale(t, scale=0.8)),
        "rescaled 1.25": each(lambda i, t: rotate_scale(t, scale=1.25)),
        "rescaled 0.8-1.25": each(lambda i, t: rotate_scale(t, scale=scales[i])),
        "inverted": each(lambda i, t: invert(t)),
        "flipped": each(lambda i, t: np.ascontiguousarray(dihedral(t, 1 + i % 7))),
        "shifted": each(lambda i, t: rotate_scale(t, shift=tuple(shifts[i]))),
        "noise": each(lambda i, t: add_noise(t, rng)),
        "jpeg": each(lambda i, t: jpeg(t, 70)),
        "all at once": each(
            lambda i, t: jpeg(
                add_noise(invert(rotate_scale(t, any_angle[i], scales[i], (2, -1))), rng, 3), 80
            )
        ),
    }


def test_guard_catches_every_kind_of_view_and_no_distinct_tile(landing_run) -> None:
    """Each kind of view of all 24 test tiles is found and names its tile (or another view
    of the same lesion: the test split holds several); 48 distinct tiles (other seeds, every
    label) are not."""
    settings, _ = landing_run
    guard = tg.load_guard(settings)
    test = np.load(settings.test_split / TEST_FILE)[..., 0]
    group = group_tiles(perceptual_hashes(test))
    missed = {}
    for kind, views in _views(test, seed=5).items():
        found = guard.find(perceptual_hashes(views), rings=ring_spectra(views))
        wrong = [i for i, c in enumerate(found) if c is None or group[c.index] != group[i]]
        if wrong:
            missed[kind] = wrong
    assert not missed, f"views not traced to their test tile: {missed}"
    distinct = np.stack([make_tile(700 + i, "train", i, i % 5) for i in range(48)])
    found = guard.find(perceptual_hashes(distinct), rings=ring_spectra(distinct))
    assert found == [None] * 48, [c.describe() for c in found if c]


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


def test_pool_workers_search_the_index_and_name_the_test_tile(landing_run, tmp_path) -> None:
    """With a worker pool the index is searched in the workers (from the cache file the
    validating process names): the same files get the same verdicts and reasons as in the
    in-process run above."""
    settings, results = landing_run
    names = ["clean.tfrecords", "exact_copy.tfrecords", "rotated_copy.tfrecords"]
    pool = Settings(data_dir=tmp_path, validation_workers=2, test_dir=settings.test_split)
    pool.landing.mkdir(parents=True)
    for name in names:
        shutil.copy(results[name].destination, pool.landing / name)
    assert tg.guard_file(pool).endswith(".npz")
    assert len(tg.load_guard_file(tg.guard_file(pool))) == 24
    got = {f.file: f for f in validate_landing(pool).files}
    assert {n: got[n].verdict for n in names} == {n: results[n].verdict for n in names}
    for name in names[1:]:
        (failed,) = _reason(pool, name)["failed_expectations"]
        assert failed["examples"] == _reason(settings, name)["failed_expectations"][0]["examples"]


def test_no_test_split_is_named_as_an_empty_index_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert tg.guard_file(settings) == ""
    assert len(tg.load_guard_file("")) == 0
