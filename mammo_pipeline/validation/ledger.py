"""Durable memory of past validations.

- :class:`Ledger`: an append-only JSON-lines file keyed by the file's sha256. A file whose
  bytes were already decided (passed or quarantined) is not validated or moved again. A line
  torn by a crash is skipped on reading and never merged with the next entry.
- :class:`HashIndex`: a small SQLite table of the pixel content hashes of every validated
  record, so the suite can reject tiles that duplicate data already used for training. It is
  updated only after a file's move into ``validated/`` succeeded.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 500  # SQLite's default limit on host parameters is 999


class Ledger:
    """``<reports>/validation_ledger.jsonl``: one JSON object per decided file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_sha: dict[str, dict[str, Any]] = {}
        self._torn_tail = False  # the last line has no newline (a crash in the middle of it)
        if path.is_file():
            with open(path, "rb") as raw:
                if raw.seek(0, os.SEEK_END):
                    raw.seek(-1, os.SEEK_END)
                    self._torn_tail = raw.read(1) != b"\n"
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line after a crash; the rest is intact
                    if isinstance(entry, dict) and entry.get("sha256"):
                        self._by_sha[entry["sha256"]] = entry

    def lookup(self, sha256: str) -> dict[str, Any] | None:
        return self._by_sha.get(sha256)

    def known(self) -> frozenset[str]:
        """The sha256 of every file decided so far."""
        return frozenset(self._by_sha)

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, default=str) + "\n"
        if self._torn_tail:  # never glue a new entry onto a torn one: both would be lost
            line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._torn_tail = False
        self._by_sha[entry["sha256"]] = entry

    def __len__(self) -> int:
        return len(self._by_sha)


class HashIndex:
    """``<reports>/validated_hashes.sqlite``: content hash -> validated file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS hashes (hash TEXT PRIMARY KEY, file TEXT NOT NULL)"
        )
        self._db.commit()

    def seen(self, hashes: Iterable[str]) -> set[str]:
        """The subset of ``hashes`` already in validated data."""
        wanted = list({h for h in hashes if h})
        found: set[str] = set()
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT hash FROM hashes WHERE hash IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def add(self, hashes: Iterable[str], file: str) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO hashes (hash, file) VALUES (?, ?)",
                ((h, file) for h in hashes if h),
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM hashes").fetchone()[0])

    def close(self) -> None:
        self._db.close()
