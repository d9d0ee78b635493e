"""Data manifests: per-file sha256 and counts, a location-independent digest, round trip."""

from __future__ import annotations

import shutil

import pytest

from mammo_pipeline.data.manifest import DataManifest, build_manifest, held_out_files
from mammo_pipeline.data.tfrecord_io import file_sha256
from mammo_pipeline.errors import DataError


def _files(d):
    return sorted(d.glob("*.tfrecords"))


def test_files_digests_and_counts(synthetic_dir):
    m = build_manifest(_files(synthetic_dir))
    assert len(m.files) == 3 and m.total_records == 120 and m.synthetic
    for f in m.files:
        assert f.sha256 == file_sha256(f.path).sha256
    assert len(m.sha256) == 64


def test_digest_ignores_location_but_not_content(synthetic_dir, tmp_path):
    original = build_manifest(_files(synthetic_dir))
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    for f in _files(synthetic_dir):
        shutil.copy(f, copy_dir / f.name)
    assert build_manifest(_files(copy_dir)).sha256 == original.sha256
    assert build_manifest(_files(copy_dir)[:2]).sha256 != original.sha256


def test_round_trip_and_tamper(synthetic_dir, tmp_path):
    m = build_manifest(_files(synthetic_dir))
    path = m.write(tmp_path / "manifest.json")
    again = DataManifest.read(path)
    assert again.sha256 == m.sha256 and again.paths == m.paths
    tampered = path.read_text().replace(m.files[0].sha256, "0" * 64)
    (tmp_path / "bad.json").write_text(tampered)
    with pytest.raises(DataError, match="digest"):
        DataManifest.read(tmp_path / "bad.json")


def test_test_split_manifest(synthetic_dir):
    files = held_out_files(synthetic_dir)
    assert [f.name for f in files] == ["synthetic_test_data.npy", "synthetic_test_labels.npy"]
    m = build_manifest(files)
    assert [f.records for f in m.files] == [40, 40]


def test_errors(tmp_path):
    with pytest.raises(DataError):
        build_manifest([])
    with pytest.raises(DataError, match="no such file"):
        build_manifest([tmp_path / "missing.tfrecords"])
    with pytest.raises(DataError):
        held_out_files(tmp_path)
