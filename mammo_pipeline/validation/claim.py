"""Claiming landing files, so that validation checks exactly the bytes it moves.

A validation run never reads a file under its landing name. It first **claims** it: an atomic
rename into its private staging folder ``<landing>/.claimed/<run-id>/`` (inside landing, so on
the same filesystem). From then on no uploader can replace those bytes under the run's feet: a
file renamed over the landing name later is a new file, left in landing for the next run. The
claimed file is hashed, profiled, checked and then moved from the staging folder; a file that
is not moved (already validated, an error, changed meanwhile) is put back into landing.

- Only regular files with an upload's final name are candidates: names starting with ``.`` or
  ending in ``.tmp`` / ``.part`` are uploads in progress and are ignored.
- :func:`settle` holds back files modified within the quiet period (``landing_quiet_seconds``):
  young files are looked at again once the period has passed, and a file whose size or
  modification time changed meanwhile is still being written: it stays in landing.
- Before a claimed file is moved, the run writes its decision to a journal
  (``.claimed/<run-id>/.decisions/<name>.json``) and removes it once the move and the
  bookkeeping (hash index, reference profile, ledger) are done. A run killed at any moment
  leaves every file in exactly one place (landing, the staging folder, validated, quarantine);
  the next run (:meth:`ClaimArea.stale_runs`) finishes what the journal says was moved and
  puts every other staged file back into landing, to be validated again.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammo_pipeline.errors import DataError
from mammo_pipeline.validation.movement import move_into, rename_noreplace, write_json_atomic

CLAIM_DIR = ".claimed"
JOURNAL_DIR = ".decisions"
#: Suffixes of uploads still in progress (together with hidden names).
UPLOAD_SUFFIXES = (".tmp", ".part")


def new_run_id() -> str:
    """A unique, sortable id for one validation run: ``20250101T120000Z-<pid>-<hex>``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}-{secrets.token_hex(3)}"


def is_upload_name(name: str) -> bool:
    """Whether ``name`` is a finished upload's name (not hidden, not a temporary name)."""
    return not name.startswith(".") and not name.endswith(UPLOAD_SUFFIXES)


def landing_candidates(landing: Path) -> list[Path]:
    """The entries of ``landing`` to validate, in name order: regular files and symbolic
    links (reported as errors when claimed) with a finished upload's name."""
    out = []
    for entry in os.scandir(landing):
        if not is_upload_name(entry.name):
            continue
        try:
            if entry.is_symlink() or entry.is_file(follow_symlinks=False):
                out.append(Path(entry.path))
        except OSError:
            continue
    return sorted(out)


@dataclass(frozen=True, slots=True)
class Stamp:
    """What identifies one version of a file: inode, size and modification time."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(slots=True)
class Deferred:
    """A landing file left where it is for the next run, and why."""

    path: Path
    reason: str


def settle(
    paths: list[Path],
    quiet_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Path], list[Deferred]]:
    """Split candidates into those quiet enough to claim and those still being written.

    A file not modified for ``quiet_seconds`` is ready. Younger files are looked at again
    once the period has passed for all of them (one wait of at most ``quiet_seconds``): a file
    whose inode, size or modification time changed meanwhile is deferred. A file that
    vanished is dropped (it is no longer in landing).
    """
    if quiet_seconds <= 0:
        return list(paths), []
    now = time.time()
    first: dict[Path, Stamp] = {}
    young: list[Path] = []
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        first[path] = Stamp.of(st)
        if now - st.st_mtime < quiet_seconds:
            young.append(path)
    if young:
        wait = max(quiet_seconds - (now - first[p].mtime_ns / 1e9) for p in young)
        sleep(min(max(wait, 0.0), quiet_seconds))
    ready, deferred = [], []
    for path in paths:
        if path not in first:
            continue
        if path not in young:
            ready.append(path)
            continue
        try:
            again = Stamp.of(path.lstat())
        except FileNotFoundError:
            continue
        if again == first[path]:
            ready.append(path)
        else:
            deferred.append(
                Deferred(
                    path,
                    "still being written (its size or modification time changed within the "
                    f"quiet period of {quiet_seconds:g} s); left in landing for the next run",
                )
            )
    return ready, deferred


@dataclass(slots=True)
class Claimed:
    """A landing file held in a run's staging folder."""

    name: str  # its name in landing
    source: Path  # where it was in landing
    path: Path  # where it is now
    stamp: Stamp  # its version when claimed

    def unchanged(self) -> bool:
        """Whether the staged file is still the version that was claimed (a writer that
        kept the file open and wrote on would change its size or modification time)."""
        try:
            return Stamp.of(self.path.lstat()) == self.stamp
        except FileNotFoundError:
            return False


@dataclass(slots=True)
class StaleRun:
    """The staging folder left by a run that ended without cleaning up (killed)."""

    run_id: str
    directory: Path

    def decisions(self) -> Iterator[tuple[Path, dict[str, Any] | None]]:
        """(journal file, decision) for each journaled decision; None when unreadable."""
        journal = self.directory / JOURNAL_DIR
        if not journal.is_dir():
            return
        for entry in sorted(journal.iterdir()):
            if not entry.name.endswith(".json"):
                entry.unlink(missing_ok=True)  # a torn temporary file of the journal
                continue
            try:
                decision = json.loads(entry.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                decision = None
            yield entry, decision if isinstance(decision, dict) else None

    def staged(self) -> list[Path]:
        """The data files still staged (not yet moved)."""
        return sorted(
            p
            for p in self.directory.iterdir()
            if not p.name.startswith(".") and (p.is_file() or p.is_symlink())
        )


class ClaimArea:
    """The staging folder of one run in ``<landing>/.claimed/<run-id>/`` (created on the
    first claim, removed when the run is over and nothing is left in it)."""

    def __init__(self, landing: Path, run_id: str) -> None:
        self.landing = landing
        self.run_id = run_id
        self.root = landing / CLAIM_DIR
        self.directory = self.root / run_id
        self.journal_dir = self.directory / JOURNAL_DIR

    def claim(self, path: Path) -> Claimed | None:
        """Take ``path`` out of landing; None when it vanished before it could be taken.

        Raises :class:`DataError` (the entry stays in landing) for anything but a regular file.
        """
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        staged = self.directory / path.name
        try:
            rename_noreplace(path, staged)
        except FileNotFoundError:
            return None
        st = staged.lstat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            release_file(staged, self.landing, path.name)
            raise DataError(path, f"is {kind}; upload the file itself")
        return Claimed(name=path.name, source=path, path=staged, stamp=Stamp.of(st))

    def release(self, claimed: Claimed) -> Path:
        """Put a staged file back into landing (as ``name__N`` if an upload took its name
        meanwhile); returns where it is now."""
        return release_file(claimed.path, self.landing, claimed.name)

    def journal_path(self, claimed: Claimed) -> Path:
        return self.journal_dir / f"{claimed.name}.json"

    def journal(self, claimed: Claimed, decision: dict[str, Any]) -> Path:
        """Record what is about to be done with a staged file, before doing it."""
        return write_json_atomic(self.journal_path(claimed), decision)

    def forget(self, claimed: Claimed) -> None:
        """Remove a staged file's journal entry (its decision is complete or abandoned)."""
        self.journal_path(claimed).unlink(missing_ok=True)

    def stale_runs(self) -> list[StaleRun]:
        """Staging folders of other runs; under the landing lock, their runs are dead."""
        if not self.root.is_dir():
            return []
        return [
            StaleRun(entry.name, entry)
            for entry in sorted(self.root.iterdir())
            if entry.is_dir() and entry.name != self.run_id
        ]

    def tidy(self) -> None:
        """Remove this run's staging folder and ``.claimed`` when they are empty."""
        for d in (self.journal_dir, self.directory, self.root):
            remove_if_empty(d)


def release_file(path: Path, landing: Path, name: str) -> Path:
    """Move a staged file back into landing under ``name`` or a free ``name__N``."""
    return move_into(path, landing, name)


def remove_if_empty(directory: Path) -> bool:
    """rmdir ``directory`` if it exists and is empty; whether it is gone."""
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
