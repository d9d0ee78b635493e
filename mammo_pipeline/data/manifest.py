"""Data manifests: exactly which files (sha256, size, record count) a model saw.

A manifest's own ``sha256`` digests the sorted (file name, sha256, records) triples only, so
the same bytes give the same digest wherever they are stored; paths are kept for humans.
The Airflow snapshot task writes one for the validated files, training logs it as the MLflow
dataset input and as the ``data_manifest_sha256`` tag, and the held-out test split gets one
too (``test_manifest_sha256``) so champions evaluated on different test sets are never
compared.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mammo_pipeline.data.schema import NPY_DATA_SUFFIX, NPY_LABELS_SUFFIX, is_tfrecord_path
from mammo_pipeline.data.tfrecord_io import count_records, file_sha256
from mammo_pipeline.errors import DataError

SYNTHETIC_MARKER_FILE = "synthetic_dataset.json"


@dataclass(frozen=True)
class ManifestFile:
    name: str
    path: str
    sha256: str
    size_bytes: int
    records: int


@dataclass(frozen=True)
class DataManifest:
    files: tuple[ManifestFile, ...]
    synthetic: bool = False
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def total_records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def paths(self) -> list[Path]:
        return [Path(f.path) for f in self.files]

    @property
    def sha256(self) -> str:
        """Digest of the content: sorted (name, sha256, records); independent of location."""
        key = sorted((f.name, f.sha256, f.records) for f in self.files)
        return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()

    def to_dict(self) -> dict:
        return {
            "sha256": self.sha256,
            "total_records": self.total_records,
            "synthetic": self.synthetic,
            "created_at": self.created_at,
            "files": [asdict(f) for f in self.files],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict) -> DataManifest:
        files = tuple(ManifestFile(**f) for f in data["files"])
        manifest = cls(files, bool(data.get("synthetic", False)), data.get("created_at", ""))
        if data.get("sha256") and data["sha256"] != manifest.sha256:
            raise DataError(None, "manifest digest does not match its file list (edited?)")
        return manifest

    @classmethod
    def read(cls, path: Path | str) -> DataManifest:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(path, f"not a readable data manifest ({exc})") from exc


def _record_count(path: Path) -> int:
    if path.name.endswith((NPY_DATA_SUFFIX, NPY_LABELS_SUFFIX)):
        import numpy as np

        return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
    if is_tfrecord_path(path.name):
        return count_records(path)
    raise DataError(path, "not a tfrecord or numpy split file")


def is_synthetic(paths: Iterable[Path]) -> bool:
    """True when a file name says 'synthetic' or its folder has the generator's marker."""
    return any(
        "synthetic" in p.name.lower() or (p.parent / SYNTHETIC_MARKER_FILE).is_file() for p in paths
    )


def build_manifest(files: Iterable[Path | str]) -> DataManifest:
    """Hash and count each file (tfrecords or ``*_data.npy`` / ``*_labels.npy``)."""
    paths = sorted({Path(f).resolve() for f in files})
    if not paths:
        raise DataError(None, "no data files to put in a manifest")
    entries = []
    for p in paths:
        if not p.is_file():
            raise DataError(p, "no such file")
        digest = file_sha256(p)
        entries.append(
            ManifestFile(p.name, str(p), digest.sha256, digest.size_bytes, _record_count(p))
        )
    return DataManifest(tuple(entries), synthetic=is_synthetic(paths))


def held_out_files(directory: Path | str) -> list[Path]:
    """The ``*_data.npy`` and matching ``*_labels.npy`` files of a test split directory."""
    from mammo_pipeline.data.numpy_split import find_splits, labels_path_for

    data = find_splits(directory)
    if not data:
        raise DataError(directory, f"no *{NPY_DATA_SUFFIX} test split found")
    return [p for d in data for p in (d, labels_path_for(d))]
