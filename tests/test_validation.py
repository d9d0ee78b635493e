"""Validation of incoming tfrecords: a corpus of bad and good files through the real GX
context in ``expectations/``, real files under a temporary directory."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.data.example_codec import encode_features, encode_tile
from mammo_pipeline.data.tfrecord_io import write_records
from mammo_pipeline.validation.run import validate_landing

REPO = Path(__file__).resolve().parents[1]
# Positives at 1, 5 and 8: every prefix used below keeps the positive fraction in the band.
LABELS = [0, 1, 0, 0, 0, 2, 0, 0, 4, 0]
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"


def tile(seed: int, lo: int = 40, hi: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=(299, 299), dtype=np.uint8)


def records(seed: int, labels: list[int] = LABELS, lo: int = 40, hi: int = 200) -> list[bytes]:
    return [encode_tile(tile(seed * 1000 + i, lo, hi), lab) for i, lab in enumerate(labels)]


def frame(payload: bytes) -> tuple[int, int]:
    """(start, end) of the data of record 0 inside a single framed record ``payload``."""
    return 12, len(payload) - 4


def settings_for(root: Path, **kw) -> Settings:
    kw.setdefault("validation_workers", 1)  # in-process; the corpus run uses a pool
    return Settings(data_dir=root, **kw)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_corpus(landing: Path) -> dict[str, dict]:
    """Every bad case of the issue plus good files; returns name -> expectations."""
    landing.mkdir(parents=True)
    cases: dict[str, dict] = {}

    write_records(landing / "good_a.tfrecords", records(1))
    cases["good_a.tfrecords"] = {"verdict": "passed"}

    write_records(landing / "good_gzip.tfrecords.gz", records(2), compression="GZIP")
    cases["good_gzip.tfrecords.gz"] = {"verdict": "passed"}

    # Truncated in the middle of record 5.
    full = landing / "truncated.tfrecords"
    write_records(full, records(3))
    data = full.read_bytes()
    rec = len(data) // 10
    full.write_bytes(data[: 5 * rec + rec // 2])
    cases["truncated.tfrecords"] = {
        "failed": {(IN_SET, "framing_ok")},
        "record": 5,
        "problem": "truncated record data",
    }

    # One flipped byte inside the image of record 3: the data CRC no longer matches.
    crc = landing / "crc.tfrecords"
    write_records(crc, records(4))
    raw = bytearray(crc.read_bytes())
    raw[3 * rec + 5000] ^= 0xFF
    crc.write_bytes(bytes(raw))
    cases["crc.tfrecords"] = {
        "failed": {(IN_SET, "framing_ok")},
        "record": 3,
        "problem": "data checksum mismatch (CRC)",
    }

    (landing / "empty.tfrecords").write_bytes(b"")
    cases["empty.tfrecords"] = {
        "failed": {
            ("expect_table_row_count_to_be_between", None),
            ("expect_column_mean_to_be_between", "label_normal"),
        }
    }

    (landing / "random.tfrecords").write_bytes(np.random.default_rng(5).bytes(5000))
    cases["random.tfrecords"] = {
        "failed": {(IN_SET, "framing_ok"), ("expect_column_mean_to_be_between", "label_normal")},
        "record": 0,
    }

    recs = records(6)
    recs[4] = encode_features({"image": [b"\x80" * 1000], "label": [0], "label_normal": [0]})
    write_records(landing / "wrong_size.tfrecords", recs)
    cases["wrong_size.tfrecords"] = {"failed": {(BETWEEN, "image_bytes")}, "record": 4}

    recs = records(7)
    recs[6] = encode_tile(tile(7777), 7, 1)
    write_records(landing / "label7.tfrecords", recs)
    cases["label7.tfrecords"] = {
        "failed": {
            (IN_SET, "label"),
            ("expect_column_pair_values_to_be_in_set", "label, label_normal"),
        },
        "record": 6,
    }

    recs = records(8)
    recs[2] = encode_tile(tile(8888), 0, 1)
    write_records(landing / "inconsistent.tfrecords", recs)
    cases["inconsistent.tfrecords"] = {
        "failed": {("expect_column_pair_values_to_be_in_set", "label, label_normal")},
        "record": 2,
    }

    recs = records(9)
    recs[7] = encode_tile(np.zeros((299, 299), np.uint8), 0)
    write_records(landing / "black.tfrecords", recs)
    cases["black.tfrecords"] = {
        "failed": {
            (BETWEEN, "pixel_mean"),
            (BETWEEN, "pixel_std"),
            (BETWEEN, "pixel_max"),
            (BETWEEN, "zero_fraction"),
        },
        "record": 7,
    }

    recs = records(10)
    recs[7] = recs[2]
    write_records(landing / "duplicated.tfrecords", recs)
    cases["duplicated.tfrecords"] = {
        "failed": {("expect_column_values_to_be_unique", "content_hash")},
        "record": 2,
    }

    recs = records(11)
    recs[3] = b"\xff\xff\xff not a protobuf"
    write_records(landing / "not_example.tfrecords", recs)
    cases["not_example.tfrecords"] = {"failed": {(IN_SET, "parse_ok")}, "record": 3}

    # A tile already in validated data (good_a, validated earlier in the same run).
    recs = records(12)
    recs[9] = records(1)[0]
    write_records(landing / "zz_seen_before.tfrecords", recs)
    cases["zz_seen_before.tfrecords"] = {"failed": {(IN_SET, "seen_before")}, "record": 9}

    write_records(landing / "all_negative.tfrecords", records(13, [0] * 10))
    cases["all_negative.tfrecords"] = {
        "failed": {("expect_column_mean_to_be_between", "label_normal")}
    }
    for case in cases.values():
        case.setdefault("verdict", "quarantined")
    return cases


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("validation")
    landing = root / "landing"
    cases = build_corpus(landing)
    inputs = {p.name: sha(p) for p in landing.iterdir()}
    settings = settings_for(root, validation_workers=2)
    result = validate_landing(settings, report=root / "report.json")
    return root, cases, inputs, settings, result


def test_every_file_gets_the_exact_verdict_and_reason(corpus_run) -> None:
    root, cases, _, _, result = corpus_run
    by_name = {f.file: f for f in result.files}
    assert set(by_name) == set(cases)
    for name, case in cases.items():
        f = by_name[name]
        assert f.verdict == case["verdict"], (name, f.message)
        got = {(e.expectation, e.column) for e in f.failed_expectations}
        assert got == case.get("failed", set()), (name, got)
        if "record" in case:
            records_named = [ex.get("record") for e in f.failed_expectations for ex in e.examples]
            assert case["record"] in records_named, (name, records_named)
        if "problem" in case:
            framing = next(e for e in f.failed_expectations if e.column == "framing_ok")
            assert framing.examples[0]["problem"] == case["problem"]
            assert f"record {case['record']}" in framing.message
    assert by_name["good_gzip.tfrecords.gz"].facts["compression"] == "GZIP"
    assert by_name["good_a.tfrecords"].records == 10
    assert by_name["truncated.tfrecords"].facts["crc_ok"] is False
    assert by_name["truncated.tfrecords"].facts["framing_error_index"] == 5


def test_quarantine_reason_json_lists_every_failure_in_words_and_numbers(corpus_run) -> None:
    root, cases, _, _, result = corpus_run
    for f in result.files:
        if f.verdict != "quarantined":
            assert not (root / "quarantine" / f"{f.file}.reason.json").exists()
            continue
        reason = json.loads((root / "quarantine" / f"{f.file}.reason.json").read_text())
        assert reason["file"] == f.file and reason["sha256"] == f.sha256
        assert reason["verdict"] == "quarantined" and reason["validated_at"]
        assert len(reason["failed_expectations"]) == len(cases[f.file]["failed"])
        for failed in reason["failed_expectations"]:
            assert failed["description"] and failed["message"].startswith(failed["description"])
            assert failed["expected"]
        assert Path(reason["data_docs"]).is_file()
    black = json.loads((root / "quarantine" / "black.tfrecords.reason.json").read_text())
    zero = next(e for e in black["failed_expectations"] if e["column"] == "zero_fraction")
    assert zero["unexpected_count"] == 1 and zero["element_count"] == 10
    assert zero["expected"] == {"min_value": 0, "max_value": 0.9}
    assert zero["examples"] == [{"record": 7, "value": 1}]
    band = json.loads((root / "quarantine" / "all_negative.tfrecords.reason.json").read_text())
    (mean,) = band["failed_expectations"]
    assert mean["observed"] == 0 and mean["expected"] == {"min_value": 0.02, "max_value": 0.5}


def test_every_input_file_is_in_exactly_one_directory(corpus_run) -> None:
    root, cases, inputs, _, result = corpus_run
    found: dict[str, list[str]] = {}
    for d in ("landing", "validated", "quarantine"):
        for p in (root / d).iterdir():
            if p.name.endswith(".reason.json"):
                continue
            found.setdefault(p.name, []).append(d)
            assert sha(p) == inputs[p.name]
    assert set(found) == set(inputs)
    for name, dirs in found.items():
        expected = "validated" if cases[name]["verdict"] == "passed" else "quarantine"
        assert dirs == [expected], name
    assert sorted(Path(p).name for p in result.new_validated_files) == [
        "good_a.tfrecords",
        "good_gzip.tfrecords.gz",
    ]
    assert (result.passed, result.quarantined, result.skipped, result.errors) == (2, 12, 0, 0)


def test_report_and_result_are_json_and_point_at_data_docs(corpus_run) -> None:
    root, _, _, _, result = corpus_run
    report = json.loads((root / "report.json").read_text())
    assert report == json.loads(result.to_json())
    assert report["counts"] == {
        "files": 14,
        "passed": 2,
        "quarantined": 12,
        "skipped": 0,
        "deferred": 0,
        "errors": 0,
    }
    assert Path(result.data_docs_path).name == "index.html"
    assert Path(result.data_docs_path).is_file()
    assert Path(result.data_docs_path).is_relative_to(root / "reports")
    assert "drift" in report and "summary" in report["drift"]
    lines = result.summary_lines()
    assert any("truncated.tfrecords" in line and "quarantined" in line for line in lines)


def test_validation_never_writes_into_the_committed_context(corpus_run) -> None:
    assert not (REPO / "expectations" / "gx" / "uncommitted" / "validations").exists() or not any(
        (REPO / "expectations" / "gx" / "uncommitted" / "validations").rglob("*.json")
    )


def test_rerun_is_a_no_op_and_redropped_content_is_not_moved_again(corpus_run, tmp_path) -> None:
    root, _, _, settings, _ = corpus_run

    def snapshot() -> dict[str, int]:
        return {
            str(p.relative_to(root)): p.stat().st_mtime_ns
            for d in ("landing", "validated", "quarantine")
            for p in (root / d).iterdir()
        }

    ledger = (root / "reports" / "validation_ledger.jsonl").read_text()
    before = snapshot()
    again = validate_landing(settings)
    assert again.files == [] and snapshot() == before
    assert (root / "reports" / "validation_ledger.jsonl").read_text() == ledger

    # The same bytes dropped again (under another name) are reported, not moved.
    copy = root / "landing" / "good_a_again.tfrecords"
    copy.write_bytes((root / "validated" / "good_a.tfrecords").read_bytes())
    redo = validate_landing(settings)
    (f,) = redo.files
    assert f.verdict == "skipped" and "already validated" in f.message
    assert copy.exists() and not (root / "validated" / "good_a_again.tfrecords").exists()
    copy.unlink()


def test_name_collision_never_overwrites(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    landing = tmp_path / "landing"
    write_records(landing / "batch.tfrecords", records(21))
    validate_landing(settings)
    write_records(landing / "batch.tfrecords", records(22))  # same name, new content
    result = validate_landing(settings)
    (f,) = result.files
    assert f.verdict == "passed" and Path(f.destination).name == "batch__2.tfrecords"
    assert sorted(p.name for p in (tmp_path / "validated").iterdir()) == [
        "batch.tfrecords",
        "batch__2.tfrecords",
    ]


def test_drift_is_reported_and_blocks_only_when_configured(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_records(landing / "reference.tfrecords", records(31, lo=60, hi=140))
    first = validate_landing(settings_for(tmp_path))
    assert first.files[0].verdict == "passed"
    assert "no reference" in first.files[0].drift["summary"]
    reference = json.loads((tmp_path / "reports" / "reference_profile.json").read_text())
    assert reference["records"] == 10 and reference["positive_fraction"] == pytest.approx(0.3)

    bright = records(32, [0, 1, 1, 0, 2, 0, 3, 0, 4, 0], lo=170, hi=250)
    write_records(landing / "bright.tfrecords", bright)
    reported = validate_landing(settings_for(tmp_path, drift_blocks=False))
    (f,) = reported.files
    assert f.verdict == "passed", f.message
    assert f.drift["drifted"] and f.drift["intensity_drift"] and f.drift["class_balance_drift"]
    assert f.drift["psi"] > 0.2 and f.drift["statistic"] == "psi"
    assert f.drift["positive_fraction_change"] == pytest.approx(0.2)
    assert reported.drift["psi"] == f.drift["psi"]

    write_records(landing / "bright2.tfrecords", records(33, lo=200, hi=256))
    blocked = validate_landing(settings_for(tmp_path, drift_blocks=True, drift_psi_threshold=0.5))
    (g,) = blocked.files
    assert g.verdict == "quarantined"
    assert [e.expectation for e in g.failed_expectations] == ["drift"]
    reason = json.loads(Path(g.reason_file).read_text())
    assert (
        reason["drift"]["blocks"] is True and "PSI" in reason["failed_expectations"][0]["message"]
    )


def test_profile_numbers(tmp_path: Path) -> None:
    from mammo_pipeline.validation.profile import profile_file

    img = tile(99)
    img[0, :10] = 0
    img[1, :5] = 255
    path = tmp_path / "one.tfrecords.gz"
    write_records(path, [encode_tile(img, 3)], compression="GZIP")
    prof = profile_file(path)
    row = prof.records.iloc[0]
    assert row["pixel_mean"] == pytest.approx(img.mean(), abs=1e-4)
    assert row["pixel_std"] == pytest.approx(img.std(), abs=1e-3)
    assert (row["pixel_min"], row["pixel_max"]) == (0, 255)
    assert row["zero_fraction"] == pytest.approx(np.count_nonzero(img == 0) / img.size)
    assert row["saturated_fraction"] == pytest.approx(np.count_nonzero(img == 255) / img.size)
    assert row["content_hash"] == hashlib.sha1(img.tobytes()).hexdigest()
    assert (row["label"], row["label_normal"], row["image_bytes"]) == (3, 1, 89401)
    facts = prof.facts
    assert facts.compression == "GZIP" and facts.record_count == 1 and facts.crc_ok
    with gzip.open(path) as fh:
        assert len(fh.read()) > 89401
    assert facts.sha256 == sha(path)


def test_psi_is_zero_for_identical_and_grows_with_shift() -> None:
    from mammo_pipeline.validation.drift import psi

    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert 0 < psi([10, 20, 30], [20, 20, 20]) < psi([10, 20, 30], [30, 20, 0])


def test_move_across_filesystems_copies_fsyncs_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mammo_pipeline.validation import movement

    src = tmp_path / "a" / "x.tfrecords"
    src.parent.mkdir()
    src.write_bytes(b"payload")
    real_rename = os.rename

    def cross_device(a, b):
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(a, b)

    monkeypatch.setattr(movement.os, "rename", cross_device)
    target = movement.free_name(tmp_path / "b", "x.tfrecords")
    movement.move_file(src, target)
    assert not src.exists() and target.read_bytes() == b"payload"
    assert list((tmp_path / "b").iterdir()) == [target]
    with pytest.raises(FileExistsError):
        movement.move_file(target, target)
    assert movement.free_name(tmp_path / "b", "x.tfrecords").name == "x__2.tfrecords"


def test_cli_exit_codes(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_records(landing / "good.tfrecords", records(41))
    (landing / "bad.tfrecords").write_bytes(b"\x00" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    env["MAMMO_DATA_DIR"] = str(tmp_path)
    cmd = [sys.executable, "-m", "mammo_pipeline.cli.main", "validate"]
    ok = subprocess.run(
        [*cmd, "--report", str(tmp_path / "r.json"), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "1 passed, 1 quarantined" in ok.stdout
    assert json.loads((tmp_path / "r.json").read_text())["quarantined"] == 1
    missing = subprocess.run(
        [*cmd, "--landing", str(tmp_path / "nope")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: landing directory does not exist"
    ]


def test_missing_gx_context_stops_the_run_before_any_move(tmp_path: Path) -> None:
    from mammo_pipeline.errors import ConfigError

    write_records(tmp_path / "landing" / "good.tfrecords", records(51))
    settings = settings_for(tmp_path, expectations_dir=tmp_path / "no_context")
    with pytest.raises(ConfigError, match="no Great Expectations context"):
        validate_landing(settings)
    assert [p.name for p in (tmp_path / "landing").iterdir()] == ["good.tfrecords"]


def test_vectorised_pair_rule_answers_as_gx_does_row_by_row() -> None:
    """The label / label_normal consistency rule's metric, computed once per distinct pair
    (:mod:`mammo_pipeline.validation.gx_metrics`), gives GX's row-by-row answer (a missing
    value is None, then the pair is looked up) on frames with missing values, wrong pairs,
    a pair set holding None and a shuffled index; and the suite really uses it."""
    import pandas as pd

    from mammo_pipeline.validation import gx_metrics

    def row_by_row(a: pd.Series, b: pd.Series, pairs: list) -> list[bool]:
        allowed = {(x, y) for x, y in pairs}
        return [
            (None if pd.isnull(x) else x, None if pd.isnull(y) else y) in allowed
            for x, y in zip(a, b, strict=True)
        ]

    rng = np.random.default_rng(0)
    suite_pairs = [[0, 0], [1, 1], [2, 1], [3, 1], [4, 1]]
    for trial in range(20):
        n = int(rng.integers(0, 200))
        a = rng.integers(-1, 7, n).astype(float)
        b = rng.integers(-1, 3, n).astype(float)
        a[rng.random(n) < 0.1] = np.nan
        b[rng.random(n) < 0.1] = np.nan
        index = pd.Index(rng.permutation(n) * 3)
        pairs = suite_pairs + ([[None, 1]] if trial % 2 else [])
        for column_a in (pd.Series(a, index=index), pd.Series(a, index=index).astype(object)):
            column_b = pd.Series(b, index=index)
            got = gx_metrics.pair_in_set(column_a, column_b, pairs)
            assert got.index.equals(index)
            assert got.tolist() == row_by_row(column_a, column_b, pairs), trial

    gx_metrics.register()
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.registry import get_metric_provider

    provider_class, _ = get_metric_provider(
        "column_pair_values.in_set.condition", PandasExecutionEngine()
    )
    assert provider_class.__name__ == "FastColumnPairValuesInSet"
