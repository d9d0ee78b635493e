"""Writing an import's tiles, all or nothing.

Training tiles become tfrecord shards ``<name>_train_NNN.tfrecords`` in the output folder
(normally the landing folder); held-out tiles become the published numpy form
``<name>_test_data.npy`` (N x 299 x 299 x 1 uint8) + ``<name>_test_labels.npy`` in the test
folder; the JSON import report is written last. Everything is first written under hidden
staging folders (``.<name>.import-tmp-<pid>``, never picked up by validation, which only
reads plain files) and renamed into place only when the whole import succeeded; on any error
the staging folders are removed, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.importers.common import OutputExistsError, Split
from mammo_pipeline.data.schema import (
    IMAGE_BYTES,
    LABEL_VALUES,
    NPY_DATA_SUFFIX,
    NPY_LABELS_SUFFIX,
    SOURCE_SIZE,
)
from mammo_pipeline.data.tfrecord_io import write_records
from mammo_pipeline.errors import MammoError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class ImportOutputs:
    """What an import wrote, with counts per split and label."""

    train_files: list[Path]
    test_data: Path | None
    test_labels: Path | None
    report: Path
    counts: dict[str, dict[int, int]]

    def total(self, split: str | None = None) -> int:
        splits = [split] if split else list(self.counts)
        return sum(sum(self.counts[s].values()) for s in splits)


@dataclass
class _Staging:
    train_dir: Path
    test_dir: Path
    test_raw: Path
    train_files: list[Path] = field(default_factory=list)


def _top_new_ancestor(path: Path) -> Path:
    """The highest folder of ``path``'s chain that does not exist yet (``path`` itself when
    only it is missing)."""
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def _remove_empty_up_to(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    current = folder
    while True:
        try:
            current.rmdir()
        except OSError:
            return  # not empty (committed files) or already gone
        if current == top or current.parent == current:
            return
        current = current.parent


class ImportWriter:
    """Collects tiles (streaming them to staging files) and commits them atomically.

    Use as a context manager: leaving the block without :meth:`commit` (an error) removes
    everything written so far.
    """

    def __init__(
        self,
        name: str,
        out_dir: Path | str,
        test_out_dir: Path | str,
        report_path: Path | str,
        *,
        records_per_file: int = 2000,
        overwrite: bool = False,
    ) -> None:
        if not _NAME.match(name):
            raise MammoError(f"output name {name!r} must be letters, digits, '-' or '_'")
        if records_per_file < 1:
            raise ValueError("records_per_file must be positive")
        self.name = name
        self.out_dir = Path(out_dir)
        self.test_out_dir = Path(test_out_dir)
        self.report_path = Path(report_path)
        self.records_per_file = records_per_file
        self.overwrite = overwrite
        self.counts: dict[str, Counter[int]] = {s: Counter() for s in SPLITS}
        self.tiles: list[dict[str, Any]] = []
        self._buffer: list[bytes] = []
        self._test_labels: list[int] = []
        self._staging: _Staging | None = None
        self._created: list[tuple[Path, Path]] = []  # (folder, its top-most new ancestor)
        self._committed = False
        #: The report as written by :meth:`commit` (with outputs, counts and tiles).
        self.final_report: dict[str, Any] = {}
        self._check_targets()

    # --- targets -------------------------------------------------------------------------
    def _old_shards(self) -> list[Path]:
        if not self.out_dir.is_dir():
            return []
        return sorted(self.out_dir.glob(f"{self.name}_train_[0-9][0-9][0-9]*.tfrecords"))

    @property
    def test_data_path(self) -> Path:
        return self.test_out_dir / f"{self.name}_test{NPY_DATA_SUFFIX}"

    @property
    def test_labels_path(self) -> Path:
        return self.test_out_dir / f"{self.name}_test{NPY_LABELS_SUFFIX}"

    def _check_targets(self) -> None:
        if self.overwrite:
            return
        existing = [*self._old_shards(), self.test_data_path, self.test_labels_path]
        existing.append(self.report_path)
        for path in existing:
            if path.exists():
                raise OutputExistsError(path, "already exists (pass overwrite to replace it)")

    # --- staging -------------------------------------------------------------------------
    def __enter__(self) -> ImportWriter:
        tag = f".{self.name}.import-tmp-{os.getpid()}"
        train_dir = self.out_dir / tag
        test_dir = self.test_out_dir / tag
        self._created = [(d, _top_new_ancestor(d)) for d in (self.out_dir, self.test_out_dir)
                         if not d.exists()]  # fmt: skip
        for d in (train_dir, test_dir):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        self._staging = _Staging(train_dir, test_dir, test_dir / "test.raw")
        self._staging.test_raw.touch()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self._staging is None:
            return
        for d in (self._staging.train_dir, self._staging.test_dir):
            shutil.rmtree(d, ignore_errors=True)
        self._staging = None
        for folder, top in self._created:  # a failed import leaves no empty folders behind
            _remove_empty_up_to(folder, top)
        self._created = []

    def _flush(self) -> None:
        assert self._staging is not None
        if not self._buffer:
            return
        index = len(self._staging.train_files)
        path = self._staging.train_dir / f"{self.name}_train_{index:03d}.tfrecords"
        write_records(path, self._buffer)
        self._staging.train_files.append(path)
        self._buffer = []

    def add(self, pixels: np.ndarray, label: int, split: Split, **provenance: Any) -> None:
        """Add one 299 x 299 uint8 tile; ``provenance`` (patient, source, kind, ...) goes
        into the report's tile list."""
        if self._staging is None:
            raise RuntimeError("ImportWriter.add outside its 'with' block")
        tile = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(SOURCE_SIZE, SOURCE_SIZE)
        if label not in LABEL_VALUES:
            raise ValueError(f"label {label} is outside 0..4")
        entry: dict[str, Any] = {"split": split, "label": int(label), **provenance}
        if split == "train":
            entry["file"] = f"{self.name}_train_{len(self._staging.train_files):03d}.tfrecords"
            entry["record"] = len(self._buffer)
            self._buffer.append(encode_tile(tile, int(label)))
            if len(self._buffer) >= self.records_per_file:
                self._flush()
        elif split == "test":
            entry["file"] = self.test_data_path.name
            entry["record"] = len(self._test_labels)
            with open(self._staging.test_raw, "ab") as fh:
                fh.write(tile.tobytes())
            self._test_labels.append(int(label))
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.counts[split][int(label)] += 1
        self.tiles.append(entry)

    # --- commit --------------------------------------------------------------------------
    def _write_test_arrays(self) -> tuple[Path, Path] | None:
        assert self._staging is not None
        n = len(self._test_labels)
        if n == 0:
            return None
        data_tmp = self._staging.test_dir / self.test_data_path.name
        labels_tmp = self._staging.test_dir / self.test_labels_path.name
        header = {"descr": "|u1", "fortran_order": False, "shape": (n, SOURCE_SIZE, SOURCE_SIZE, 1)}
        with open(data_tmp, "wb") as out, open(self._staging.test_raw, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, length=IMAGE_BYTES * 64)
        np.save(labels_tmp, np.asarray(self._test_labels, dtype=np.int64), allow_pickle=False)
        return data_tmp, labels_tmp

    def commit(self, report: dict[str, Any]) -> ImportOutputs:
        """Finish the files, move them into place and write the report (with the output
        paths, counts and tile list added). Only now do files appear in the output folders;
        every file is complete before the first one is moved."""
        if self._staging is None:
            raise RuntimeError("ImportWriter.commit outside its 'with' block")
        self._flush()
        test_tmp = self._write_test_arrays()
        staged_train = list(self._staging.train_files)
        train_files = [self.out_dir / tmp.name for tmp in staged_train]
        test_data = self.test_data_path if test_tmp else None
        test_labels = self.test_labels_path if test_tmp else None
        counts = {s: {lab: int(self.counts[s][lab]) for lab in LABEL_VALUES} for s in SPLITS}
        full = dict(report)
        full["outputs"] = {
            "train_files": [str(p) for p in train_files],
            "test_data": str(test_data) if test_data else None,
            "test_labels": str(test_labels) if test_labels else None,
        }
        full["counts"] = {s: {str(k): v for k, v in c.items()} for s, c in counts.items()}
        full["tiles"] = self.tiles
        self.final_report = full
        report_tmp = self._staging.test_dir / "import_report.json"
        report_tmp.write_text(json.dumps(full, indent=1) + "\n")

        self._check_targets()  # another process may have written meanwhile
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            keep = {p.name for p in train_files}
            for old in self._old_shards():
                if old.name not in keep:
                    old.unlink()
            if test_tmp is None:
                self.test_data_path.unlink(missing_ok=True)
                self.test_labels_path.unlink(missing_ok=True)
        if test_tmp is not None:
            os.replace(test_tmp[0], self.test_data_path)
            os.replace(test_tmp[1], self.test_labels_path)
        for tmp, final in zip(staged_train, train_files, strict=True):
            os.replace(tmp, final)
        if report_tmp.stat().st_dev == self.report_path.parent.stat().st_dev:
            os.replace(report_tmp, self.report_path)
        else:  # another file system: copy under a hidden name, then rename
            hidden = self.report_path.with_name(f".{self.report_path.name}.tmp-{os.getpid()}")
            shutil.copyfile(report_tmp, hidden)
            os.replace(hidden, self.report_path)
        self._committed = True
        self._cleanup()
        return ImportOutputs(train_files, test_data, test_labels, self.report_path, counts)
