"""`make demo` run twice on the same `.demo/`: the second run must bring data the validator
has not seen (before, it regenerated round 1's files byte for byte, validation skipped them as
already validated, nothing triggered mammo_retrain and the demo waited 30 minutes for it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.orchestration.demo_data import make_round
from mammo_pipeline.validation.run import validate_landing


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_demo_round_is_new_data_that_passes_validation(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data", expectations_dir=Path("expectations"))
    demo = tmp_path / ".demo"
    demo.mkdir()
    first = make_round(s, demo, 120, 60, films=0, say=lambda _m: None)
    assert first.number == 0 and first.wrote_test_split
    test_before = {p.name: _sha(p) for p in s.test_split.iterdir()}
    one = validate_landing(s)
    assert len(one.new_validated_files) == 3

    second = make_round(s, demo, 120, 60, films=0, say=lambda _m: None)
    assert second.number == 1 and not second.wrote_test_split
    # the held-out test split stays fixed (versions are compared on it)
    assert {p.name: _sha(p) for p in s.test_split.iterdir()} == test_before
    validated = {_sha(p) for p in s.validated.iterdir() if ".tfrecord" in p.name}
    assert not validated & {_sha(p) for p in second.landing_files}
    two = validate_landing(s)
    assert sorted(Path(f).name for f in two.new_validated_files) == sorted(
        p.name for p in second.landing_files
    ), two.summary_lines()
    labels = np.load(next(s.test_split.glob("*_labels.npy")))
    assert len(labels) == 60
