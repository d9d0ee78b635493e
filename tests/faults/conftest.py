"""Helpers of the fault-injection suite: tiny real tfrecord files, an inventory of where every
input file is (by sha256), runs of the real validation in killed child processes, and a
look at the process table (/proc) for survivors."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.data.example_codec import encode_tile
from mammo_pipeline.data.tfrecord_io import write_records

REPO = Path(__file__).resolve().parents[2]
# Positives at 1, 5 and 8: the positive fraction (0.3) is inside the suite's band.
GOOD_LABELS = [0, 1, 0, 0, 0, 2, 0, 0, 4, 0]
PLACES = ("landing", "validated", "quarantine")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection tests (kill -9, races, concurrent runs, full disks)"
    )


def good_records(seed: int) -> list[bytes]:
    """10 tiles that pass the suite (labels GOOD_LABELS, mid-grey noise)."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(40, 200, size=(len(GOOD_LABELS), 299, 299), dtype=np.uint8)
    return [encode_tile(t, lab) for t, lab in zip(tiles, GOOD_LABELS, strict=True)]


def bad_records(seed: int) -> list[bytes]:
    """10 tiles of which one carries the impossible label 7: quarantined."""
    recs = good_records(seed)
    recs[6] = encode_tile(
        np.random.default_rng(seed + 99).integers(40, 200, (299, 299), np.uint8), 7
    )
    return recs


def write_good(path: Path, seed: int) -> str:
    write_records(path, good_records(seed))
    return sha256(path)


def write_bad(path: Path, seed: int) -> str:
    write_records(path, bad_records(seed))
    return sha256(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def settings_for(root: Path, **kw) -> Settings:
    kw.setdefault("validation_workers", 1)
    kw.setdefault("landing_quiet_seconds", 0)
    return Settings(data_dir=root, **kw)


def inventory(root: Path) -> dict[str, list[str]]:
    """sha256 -> places holding those bytes: landing, validated, quarantine, or
    ``staged:<run-id>`` for a file an interrupted run left in its staging folder."""
    found: dict[str, list[str]] = {}

    def add(path: Path, place: str) -> None:
        found.setdefault(sha256(path), []).append(place)

    for place in PLACES:
        d = root / place
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".reason.json"):
                add(p, place)
    claimed = root / "landing" / ".claimed"
    if claimed.is_dir():
        for run in claimed.iterdir():
            for p in run.iterdir():
                if p.is_file() and not p.name.startswith("."):
                    add(p, f"staged:{run.name}")
    return found


def assert_each_once(root: Path, inputs: dict[str, str]) -> dict[str, str]:
    """Every input (name -> sha256) is in exactly one place with its bytes intact; returns
    name -> place."""
    found = inventory(root)
    assert set(found) == set(inputs.values()), (
        "bytes appeared or vanished: "
        f"lost={sorted(n for n, s in inputs.items() if s not in found)} "
        f"unknown={len(set(found) - set(inputs.values()))}"
    )
    where = {}
    for name, digest in inputs.items():
        assert len(found[digest]) == 1, (name, found[digest])
        where[name] = found[digest][0]
    return where


def fork_run(fn: Callable[[], object], fault: str | None = None) -> int:
    """Start ``fn`` in a forked child of this test process (GX already imported, so a run
    takes a second, not an interpreter start) with ``MAMMO_FAULT_POINT=fault``; its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            if fault:
                os.environ["MAMMO_FAULT_POINT"] = fault
            fn()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    return pid


def wait_child(pid: int, timeout: float = 120.0) -> int:
    """Wait for a forked child: the signal that ended it, or minus its exit code."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not end within {timeout} s")
        time.sleep(0.02)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    return -os.WEXITSTATUS(status)


def run_killed(fn: Callable[[], object], fault: str | None) -> int:
    """``fn`` in a forked child with the fault point armed; how the child ended (see
    :func:`wait_child`: SIGKILL when the fault point fired)."""
    return wait_child(fork_run(fn, fault))


def proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, pgid, state, command line) of every process, read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0], cmd.strip())
    return table


def descendants(pid: int, table: dict[int, tuple[int, int, str, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(p)
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    """The pids that still run (zombies, dead but not yet reaped, do not count)."""
    table = proc_table()
    return {p for p in pids if p in table and table[p][2] not in ("Z", "X")}


@pytest.fixture(scope="session")
def gx_imported() -> None:
    """Import Great Expectations once, before any forked run (a fork then starts warm)."""
    import great_expectations  # noqa: F401
