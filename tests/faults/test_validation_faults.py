"""Validation under faults: an upload replacing a file mid-run, files still being written,
``kill -9`` at every step of a run (and of its pool workers), two runs on one landing folder,
an unwritable quarantine. Real tfrecord files, the real GX context, real processes and signals;
every test prints its figures (files tried, files lost)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mammo_pipeline.errors import MammoError
from mammo_pipeline.validation.gx_context import ContractChecker
from mammo_pipeline.validation.run import validate_landing
from tests.faults.conftest import (
    REPO,
    alive,
    assert_each_once,
    descendants,
    fork_run,
    proc_table,
    run_killed,
    settings_for,
    sha256,
    wait_child,
    write_bad,
    write_good,
)

pytestmark = pytest.mark.faults


def ledger_entries(reports: Path) -> list[dict]:
    path = reports / "validation_ledger.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn line
    return out


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMO_")}
    env.update(
        MAMMO_DATA_DIR=str(root),
        MAMMO_LANDING_QUIET_SECONDS="0",
        MAMMO_VALIDATION_WORKERS="1",
    )
    env.update(extra)
    return env


CLI = [sys.executable, "-m", "mammo_pipeline.cli.main", "validate", "--no-progress"]


# --- fault 1: validate exactly the bytes that are moved ----------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_replaced_during_validation_never_reaches_validated_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, gx_imported: None
) -> None:
    """An uploader renames its finished ``.upload.tmp`` over the landing name while the run
    checks the old version: the checked bytes are the ones moved and recorded; the new
    version (here a bad one) waits in landing and is judged on its own by the next run."""
    landing = tmp_path / "landing"
    landing.mkdir()
    checked = write_good(landing / "scan.tfrecords", 1)
    upload = landing / ".scan.tfrecords.upload.tmp"
    replacement = write_bad(upload, 2)  # label 7 in record 6: must never pass
    real_validate = ContractChecker.validate
    swaps: list[str] = []

    def validate_then_upload(self, frame, run_name):
        outcome = real_validate(self, frame, run_name)
        if not swaps:  # the uploader finishes while the suite looks at the old version
            os.replace(upload, landing / "scan.tfrecords")
            swaps.append(run_name)
        return outcome

    monkeypatch.setattr(ContractChecker, "validate", validate_then_upload)
    settings = settings_for(tmp_path, validation_workers=workers)
    result = validate_landing(settings)
    (f,) = result.files
    moved = Path(f.destination)
    ledger = ledger_entries(tmp_path / "reports")
    print(
        f"\nSYNTHETIC tiles, workers={workers}: 1 file checked, replaced mid-run {len(swaps)}x; "
        f"validated sha256 {sha256(moved)[:12]} / checked {checked[:12]} / "
        f"replacement {replacement[:12]}; ledger {[e['sha256'][:12] for e in ledger]}"
    )
    assert swaps, "the replacement never happened: the test did not test anything"
    assert f.verdict == "passed" and f.sha256 == checked
    assert sha256(moved) == checked, "validated/ holds bytes that were never checked"
    assert [e["sha256"] for e in ledger] == [checked]
    assert sha256(landing / "scan.tfrecords") == replacement  # the new upload waits

    again = validate_landing(settings)
    (g,) = again.files
    assert g.verdict == "quarantined" and g.sha256 == replacement
    assert sha256(Path(g.destination)) == replacement
    assert sorted(p.name for p in (tmp_path / "validated").iterdir()) == ["scan.tfrecords"]


def test_a_file_still_being_written_waits_for_the_next_run(
    tmp_path: Path, gx_imported: None
) -> None:
    """Within the quiet period a growing file is left in landing (``deferred``, with the
    reason); a file closed just before the run is validated after the wait; upload temp
    names are never touched."""
    landing = tmp_path / "landing"
    landing.mkdir()
    inputs = {"settled.tfrecords": write_good(landing / "settled.tfrecords", 3)}
    old = time.time() - 60
    os.utime(landing / "settled.tfrecords", (old, old))
    ignored = {}
    for name in (".hidden.tfrecords", "up.tfrecords.part", "up2.tfrecords.tmp"):
        ignored[name] = write_good(landing / name, 10 + len(ignored))
    (landing / "link.tfrecords").symlink_to(landing / "settled.tfrecords")
    # The growing file's final content, written 8 KiB at a time (~2.5 s for the whole file).
    source = tmp_path / "complete.tfrecords"
    expected = write_good(source, 5)
    payload = source.read_bytes()
    stop = threading.Event()
    growing = landing / "growing.tfrecords"

    def writer() -> None:
        with open(growing, "ab") as fh:
            for i in range(0, len(payload), 8192):
                if stop.is_set():
                    return
                fh.write(payload[i : i + 8192])
                fh.flush()
                time.sleep(0.02)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while not growing.exists() or not growing.stat().st_size:
        time.sleep(0.01)
    inputs["fresh.tfrecords"] = write_good(landing / "fresh.tfrecords", 4)  # closed just now
    settings = settings_for(tmp_path, landing_quiet_seconds=1.0)
    t = time.monotonic()
    result = validate_landing(settings)
    seconds = time.monotonic() - t
    size_then = growing.stat().st_size
    thread.join(timeout=30)
    by_name = {f.file: f for f in result.files}
    print(
        f"\nSYNTHETIC tiles: {len(by_name)} files tried in {seconds:.1f} s (quiet period 1 s): "
        + ", ".join(f"{n} {f.verdict}" for n, f in sorted(by_name.items()))
        + f"; growing file {size_then} of {len(payload)} bytes at the end of the run"
    )
    assert set(by_name) == {
        "settled.tfrecords",
        "fresh.tfrecords",
        "growing.tfrecords",
        "link.tfrecords",
    }
    link = by_name["link.tfrecords"]
    assert link.verdict == "error" and "symbolic link" in link.message
    assert (landing / "link.tfrecords").is_symlink()
    assert by_name["settled.tfrecords"].verdict == "passed"
    assert by_name["fresh.tfrecords"].verdict == "passed"
    deferred = by_name["growing.tfrecords"]
    assert deferred.verdict == "deferred", deferred.message
    assert "still being written" in deferred.message and "next run" in deferred.message
    assert growing.exists()
    for name, digest in ignored.items():
        assert sha256(landing / name) == digest
    assert not (landing / ".claimed").exists()

    (landing / "link.tfrecords").unlink()
    later = validate_landing(settings_for(tmp_path))  # the upload has finished now
    (f,) = later.files
    assert f.file == "growing.tfrecords" and f.verdict == "passed" and f.sha256 == expected


# --- fault 2: workers die with their parent ----------------------------------------------
@pytest.mark.slow
def test_kill_9_of_mammo_validate_leaves_no_worker_or_tracker_alive(
    tmp_path: Path, gx_imported: None
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    inputs = {f"f{i}.tfrecords": write_good(landing / f"f{i}.tfrecords", 20 + i) for i in range(3)}
    proc = subprocess.Popen(
        CLI,
        cwd=REPO,
        env=cli_env(tmp_path, MAMMO_VALIDATION_WORKERS="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: everything it starts is in it
    )
    seen: set[int] = set()
    workers: set[int] = set()
    survivors: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            table = proc_table()
            kids = descendants(proc.pid, table)
            seen |= kids
            workers = {
                p
                for p in kids
                if "multiprocessing" in table[p][3] and "resource_tracker" not in table[p][3]
            }
            if len(workers) >= 2:
                break
            time.sleep(0.05)
        table = proc_table()
        seen |= descendants(proc.pid, table)
        tracker = {p for p in seen if p in table and "resource_tracker" in table[p][3]}
        assert proc.poll() is None, "mammo validate ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t = time.monotonic()
        while time.monotonic() - t < 10:
            group = {p for p, (_, pgid, _, _) in proc_table().items() if pgid == proc.pid}
            survivors = alive(seen | group)
            if not survivors:
                break
            time.sleep(0.1)
        gone_after = time.monotonic() - t
        print(
            f"\nSYNTHETIC tiles: mammo validate (2 workers) killed with SIGKILL while "
            f"{len(workers)} workers and {len(tracker)} resource tracker ran; "
            f"{len(survivors)} survivor(s) after {gone_after:.1f} s"
        )
    finally:
        for p in alive(seen) | survivors:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert len(workers) >= 2, "the workers never started: nothing was tested"
    assert not survivors, [proc_table().get(p) for p in survivors]

    where = assert_each_once(tmp_path, inputs)  # in landing or staged, never lost
    staged = sum(place.startswith("staged:") for place in where.values())
    result = validate_landing(settings_for(tmp_path))
    print(f"{staged} file(s) were staged when killed; the rerun passed {result.passed}")
    assert result.passed == len(inputs) and result.errors == 0
    assert set(assert_each_once(tmp_path, inputs).values()) == {"validated"}
    assert not (landing / ".claimed").exists()


# --- kill -9 at every step of a run ------------------------------------------------------
#: (fault point, what the killed run was doing). Files in name order: a good, b bad, c good,
#: d good, e bad, f good. Points inside the bookkeeping are also hit while a run finishes the
#: bookkeeping of the file an earlier run moved (a crash during recovery).
KILL_SCHEDULE = [
    ("claimed", "all files staged, nothing decided"),
    ("checked", "a checked by the suite, not yet journaled"),
    ("journaled", "a journaled, not yet moved"),
    ("moved", "a moved into validated/, nothing recorded"),
    ("indexed", "recovering a: hash index updated, reference and ledger not"),
    ("recorded", "recovering a: all recorded, journal entry not yet removed"),
    ("moved", "b moved into quarantine/ beside its reason, ledger not updated"),
    ("indexed", "c moved and indexed"),
    ("recorded:2", "c's bookkeeping finished; d moved and recorded, journal entry kept"),
]


@pytest.mark.slow
def test_kill_9_at_every_step_loses_nothing_and_a_rerun_finishes(
    tmp_path: Path, gx_imported: None
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    kinds = {"a": "good", "b": "bad", "c": "good", "d": "good", "e": "bad", "f": "good"}
    inputs = {
        f"{k}.tfrecords": (write_good if kind == "good" else write_bad)(
            landing / f"{k}.tfrecords", 30 + i
        )
        for i, (k, kind) in enumerate(kinds.items())
    }
    settings = settings_for(tmp_path)
    reports = tmp_path / "reports"
    print(f"\nSYNTHETIC tiles: {len(inputs)} files, {len(KILL_SCHEDULE)} runs killed with SIGKILL")
    for fault, doing in KILL_SCHEDULE:
        ended = run_killed(lambda: validate_landing(settings), fault)
        assert ended == signal.SIGKILL, f"the run did not die at {fault!r} (ended {ended})"
        where = assert_each_once(tmp_path, inputs)  # raises on a lost or duplicated file
        counts = {
            p: sum(v.split(":")[0] == p for v in where.values())
            for p in ("landing", "staged", "validated", "quarantine")
        }
        print(f"  killed at {fault:<11} ({doing}): files lost 0, {counts}")
    # A torn ledger line, as a power cut in the middle of an append would leave it.
    with open(reports / "validation_ledger.jsonl", "a") as fh:
        fh.write('{"sha256": "0000')
    ended = run_killed(lambda: validate_landing(settings), None)
    assert ended == 0, "the final run did not finish"

    where = assert_each_once(tmp_path, inputs)
    expected = {n: "validated" if kinds[n[0]] == "good" else "quarantine" for n in inputs}
    assert where == expected
    assert not (landing / ".claimed").exists(), "the staging folder was not cleared"
    assert [p.name for p in landing.iterdir()] == []
    entries = ledger_entries(reports)
    per_sha = {s: sum(e["sha256"] == s for e in entries) for s in inputs.values()}
    assert set(per_sha.values()) == {1}, per_sha  # every file recorded exactly once
    reasons = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert reasons == [
        "b.tfrecords",
        "b.tfrecords.reason.json",
        "e.tfrecords",
        "e.tfrecords.reason.json",
    ]
    assert sorted(p.name for p in (tmp_path / "validated").iterdir()) == [
        "a.tfrecords",
        "c.tfrecords",
        "d.tfrecords",
        "f.tfrecords",
    ]
    with sqlite3.connect(reports / "validated_hashes.sqlite") as db:
        indexed = db.execute("SELECT file, COUNT(*) FROM hashes GROUP BY file").fetchall()
    assert sorted(indexed) == [(f"{k}.tfrecords", 10) for k in "acdf"]
    reference = json.loads((reports / "reference_profile.json").read_text())
    assert reference["records"] == 40
    assert sorted(reference["files"]) == [f"{k}.tfrecords" for k in "acdf"]
    print(
        f"  final run: files lost 0, ledger entries per file {sorted(set(per_sha.values()))}, "
        f"indexed tiles {sum(n for _, n in indexed)}, reference records {reference['records']}"
    )


def test_kill_9_in_a_move_across_filesystems_keeps_exactly_one_copy(
    tmp_path: Path, gx_imported: None
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary directory")
    validated = Path(tempfile.mkdtemp(prefix="mammo-validated-", dir=shm))
    try:
        landing = tmp_path / "landing"
        landing.mkdir()
        digest = write_good(landing / "x.tfrecords", 41)
        settings = settings_for(tmp_path, validated_dir=validated)

        # Killed while the copy is under its temporary name: no data moved yet.
        assert run_killed(lambda: validate_landing(settings), "copying") == signal.SIGKILL
        partial = [p.name for p in validated.iterdir()]
        staged = list((landing / ".claimed").glob("*/x.tfrecords"))
        assert len(partial) == 1 and partial[0].startswith(".x.tfrecords.partial-")
        assert [sha256(p) for p in staged] == [digest]

        # Killed after the copy got its final name, before the staged original was removed.
        assert run_killed(lambda: validate_landing(settings), "copied") == signal.SIGKILL
        copies = [p for p in validated.iterdir()]
        staged = list((landing / ".claimed").glob("*/x.tfrecords"))
        assert [p.name for p in copies] == ["x.tfrecords"], "partial copy not cleaned up"
        assert [sha256(p) for p in copies + staged] == [digest, digest]

        result = validate_landing(settings)
        (f,) = result.files
        print(
            f"\nSYNTHETIC tiles: landing on {os.stat(tmp_path).st_dev}, validated on /dev/shm; "
            f"killed mid-copy twice, then: {f.verdict}; copies in validated "
            f"{len(list(validated.iterdir()))}, staged {len(list(landing.glob('.claimed/*/*')))}"
        )
        assert f.verdict == "passed" and "interrupted run" in f.message
        assert [sha256(p) for p in validated.iterdir()] == [digest]
        assert not (landing / ".claimed").exists()
        assert [e["sha256"] for e in ledger_entries(tmp_path / "reports")] == [digest]
    finally:
        shutil.rmtree(validated, ignore_errors=True)


# --- fault 3: one run per landing folder -------------------------------------------------
def test_a_second_run_on_the_same_landing_folder_is_refused(
    tmp_path: Path, gx_imported: None
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    inputs = {f"g{i}.tfrecords": write_good(landing / f"g{i}.tfrecords", 50 + i) for i in range(3)}
    other_landing = tmp_path / "other_landing"
    other_landing.mkdir()
    write_good(other_landing / "o.tfrecords", 60)
    started, go = tmp_path / "started", tmp_path / "go"
    settings_a = settings_for(tmp_path, reports_dir=tmp_path / "reports_a")

    def run_a() -> None:  # in the forked child: pause inside the suite until told to go
        real = ContractChecker.validate

        def paused(self, frame, run_name):
            started.touch()
            deadline = time.monotonic() + 60
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            return real(self, frame, run_name)

        ContractChecker.validate = paused
        result = validate_landing(settings_a, report=tmp_path / "a.json")
        assert result.errors == 0

    pid = fork_run(run_a)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline, "run A never reached the suite"
            time.sleep(0.02)
        # B: the real command, same landing folder, its own reports folder.
        b = subprocess.run(
            CLI,
            cwd=REPO,
            env=cli_env(tmp_path, MAMMO_REPORTS_DIR=str(tmp_path / "reports_b")),
            capture_output=True,
            text=True,
            timeout=120,
        )
        # C: another landing folder but A's reports folder (its ledger and hash index).
        with pytest.raises(MammoError, match="another validation run holds .*reports_a"):
            validate_landing(settings_a, landing=other_landing)
    finally:
        go.touch()
        ended = wait_child(pid)
    report = json.loads((tmp_path / "a.json").read_text())
    print(
        f"\nSYNTHETIC tiles: run A {report['counts']}; run B exit {b.returncode}: "
        f"{b.stderr.strip()}"
    )
    assert b.returncode == 1
    assert b.stderr.strip().splitlines() == [
        f"error: another validation run holds {landing} (lock file {landing / '.validate.lock'}); "
        "try again when it has finished"
    ]
    assert ended == 0 and report["counts"]["passed"] == 3 and report["counts"]["errors"] == 0
    assert set(assert_each_once(tmp_path, inputs).values()) == {"validated"}
    assert ledger_entries(tmp_path / "reports_b") == []
    assert [p.name for p in other_landing.iterdir()] == ["o.tfrecords"]
    assert not (landing / ".validate.lock").exists()  # removed with the run


# --- an unwritable quarantine ------------------------------------------------------------
@contextmanager
def unwritable(directory: Path, how: str = "permissions") -> Iterator[str]:
    """Make ``directory`` refuse new entries; yields how it was done. ``permissions``: mode
    555, or as root (which ignores permission bits) the immutable attribute (``chattr +i``:
    ext4, xfs, btrfs); ``file`` (or when chattr is unavailable): a plain file stands where
    the directory should be."""
    chattr = shutil.which("chattr")
    if how == "permissions" and os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield "chmod 555"
        finally:
            directory.chmod(0o755)
        return
    if (
        how == "permissions"
        and chattr
        and subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode == 0
    ):
        try:
            yield "chattr +i (immutable directory)"
        finally:
            subprocess.run([chattr, "-i", str(directory)], check=True)
        return
    directory.rmdir()
    directory.write_bytes(b"")
    try:
        yield "a plain file in place of the directory"
    finally:
        directory.unlink()
        directory.mkdir()


@pytest.mark.parametrize("how", ["permissions", "file"])
def test_an_unwritable_quarantine_fails_that_file_only(
    tmp_path: Path, how: str, gx_imported: None
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (tmp_path / "quarantine").mkdir()
    inputs = {
        "a.tfrecords": write_good(landing / "a.tfrecords", 70),
        "b.tfrecords": write_bad(landing / "b.tfrecords", 71),
        "c.tfrecords": write_good(landing / "c.tfrecords", 72),
    }
    settings = settings_for(tmp_path)
    with unwritable(tmp_path / "quarantine", how) as done:
        result = validate_landing(settings)
        by_name = {f.file: f for f in result.files}
        print(
            f"\nSYNTHETIC tiles, quarantine made unwritable by {done}: 3 files tried, "
            + ", ".join(f"{n} {f.verdict}" for n, f in sorted(by_name.items()))
            + f"; b: {by_name['b.tfrecords'].message}"
        )
        assert by_name["a.tfrecords"].verdict == "passed"
        assert by_name["c.tfrecords"].verdict == "passed"
        b = by_name["b.tfrecords"]
        assert b.verdict == "error" and "left in landing" in b.message
        assert str(tmp_path / "quarantine") in b.message
        where = assert_each_once(tmp_path, inputs)
        assert where == {
            "a.tfrecords": "validated",
            "b.tfrecords": "landing",
            "c.tfrecords": "validated",
        }
        assert not (landing / ".claimed").exists()
        assert inputs["b.tfrecords"] not in {
            e["sha256"] for e in ledger_entries(tmp_path / "reports")
        }
    again = validate_landing(settings)  # writable again: the next run decides it
    (f,) = again.files
    assert f.file == "b.tfrecords" and f.verdict == "quarantined"
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [
        "b.tfrecords",
        "b.tfrecords.reason.json",
    ]


@pytest.mark.slow
def test_mammo_validate_exits_non_zero_when_a_file_could_not_be_validated(
    tmp_path: Path,
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (tmp_path / "quarantine").mkdir()
    write_good(landing / "a.tfrecords", 80)
    write_bad(landing / "b.tfrecords", 81)
    with unwritable(tmp_path / "quarantine") as how:
        run = subprocess.run(
            CLI, cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120
        )
    print(f"\nSYNTHETIC tiles, quarantine unwritable ({how}): exit {run.returncode}")
    assert "1 passed" in run.stdout and "1 error" in run.stdout
    assert run.returncode != 0
