"""The `mammo data` commands, run as a user runs them (subprocess, real console script)."""

from __future__ import annotations

import json
import subprocess
import sys


def mammo(*args, check=False):
    return subprocess.run(
        [sys.executable, "-m", "mammo_pipeline.cli.main", *args],
        capture_output=True,
        text=True,
        check=check,
    )


def test_synth_then_inspect(tmp_path):
    out = tmp_path / "syn"
    r = mammo(
        "data",
        "synth",
        "--out",
        str(out),
        "--n",
        "30",
        "--files",
        "2",
        "--test-n",
        "5",
        "--positive-fraction",
        "0.2",
        "--compress",
        "gzip",
        check=True,
    )
    assert "SYNTHETIC" in r.stdout
    assert len(list(out.glob("*.tfrecords.gz"))) == 2
    r = mammo("data", "inspect", str(out), "--json", "--grid", str(tmp_path / "g.png"), check=True)
    summaries = json.loads(r.stdout[: r.stdout.rindex("]") + 1])
    assert [s["records"] for s in summaries] == [15, 15, 5]
    assert sum(s["label_normal_counts"].get("1", 0) for s in summaries[:2]) == 6
    assert all(s["compression"] == "GZIP" for s in summaries[:2])
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_bad_inputs_give_one_line_errors(tmp_path):
    empty = tmp_path / "empty.tfrecords"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.tfrecords"
    junk.write_bytes(b"this is not a tfrecord file at all" * 10)
    r = mammo("data", "inspect", str(tmp_path / "missing"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "missing: no such file or directory" in r.stderr
    r = mammo("data", "inspect", str(empty), str(junk))
    assert "Traceback" not in r.stderr + r.stdout
    assert r.returncode == 1 and "2 of 2 file(s) have problems" in r.stderr
    assert "empty file" in r.stdout and "junk.tfrecords" in r.stdout
    assert "record 0:" in r.stdout
    r = mammo("data", "synth", "--out", str(tmp_path / "x"), "--n", "3", "--files", "5")
    assert r.returncode != 0 and "cannot exceed" in r.stderr and "Traceback" not in r.stderr
