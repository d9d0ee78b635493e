"""Moving files between landing, validated and quarantine without ever losing one.

- A move is an atomic rename when source and target share a filesystem; otherwise the file is
  copied to a hidden temporary name in the target directory, fsynced, renamed into place, and
  only then is the source removed.
- Nothing is overwritten: when the name is taken, a numeric suffix is added
  (``a.tfrecords`` -> ``a__2.tfrecords``). Runs are serialised by :func:`run_lock`, so the
  check-then-rename is not racing another validator.
- JSON side files (``reason.json``, the report) are written to a temporary file and renamed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mammo_pipeline.errors import MammoError

REASON_SUFFIX = ".reason.json"


def _split_name(name: str) -> tuple[str, str]:
    """('a', '.tfrecords.gz') for 'a.tfrecords.gz'; hidden files keep their leading dot."""
    lead = "." if name.startswith(".") else ""
    body = name[len(lead) :]
    base, dot, ext = body.partition(".")
    return lead + base, (dot + ext) if dot else ""


def free_name(directory: Path, name: str, *, companions: tuple[str, ...] = ()) -> Path:
    """``directory/name``, or the first ``name__N`` variant that is free (together with any
    companion names such as ``<name>.reason.json``)."""
    base, ext = _split_name(name)
    n = 1
    while True:
        candidate = directory / (name if n == 1 else f"{base}__{n}{ext}")
        taken = candidate.exists() or any(
            (directory / (candidate.name + c)).exists() for c in companions
        )
        if not taken:
            return candidate
        n += 1


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_file(source: Path, target: Path) -> Path:
    """Move ``source`` to ``target`` (which must not exist); atomic within one filesystem."""
    if target.exists():
        raise FileExistsError(f"{target} exists; refusing to overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(source, target)
    _fsync_dir(target.parent)
    _fsync_dir(source.parent)
    return target


def _copy_across(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, tmp)
        if target.exists():
            raise FileExistsError(f"{target} appeared during the copy; refusing to overwrite")
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(target.parent)
    source.unlink()  # only once the copy is durable under its final name


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON to ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@contextmanager
def run_lock(directory: Path) -> Iterator[Path]:
    """An exclusive lock for one validation run at a time (non-blocking: a clear error)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".validate.lock"
    fh = open(path, "a+")  # noqa: SIM115
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise MammoError(
                f"another validation run holds {path}; try again when it has finished"
            ) from exc
        yield path
    finally:
        fh.close()
