"""Moving files between landing, validated and quarantine without ever losing or overwriting one.

- A move is an atomic no-replace rename (``renameat2(RENAME_NOREPLACE)``; a hard link then
  unlink where the filesystem lacks it) when source and target share a filesystem; otherwise
  the file is copied to a hidden temporary name in the target directory, fsynced, renamed into
  place, and only then is the source removed.
- Nothing is overwritten, even by a process that ignores the run locks: when the name is taken,
  a numeric suffix is added (``a.tfrecords`` -> ``a__2.tfrecords``) and the rename itself
  refuses an existing target.
- JSON side files (``reason.json``, the report, the claim journal) are written to a temporary
  file and renamed.
- :func:`run_lock` serialises validation runs on one directory (landing, reports).
- :func:`fault_point` is the fault-injection hook of the fault suite (``tests/faults``): it does
  nothing unless ``MAMMO_FAULT_POINT`` is set.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mammo_pipeline.errors import MammoError

REASON_SUFFIX = ".reason.json"
#: Name of the lock file of a validation run (hidden: never taken for a landing file).
LOCK_NAME = ".validate.lock"
#: ``MAMMO_FAULT_POINT=<point>`` or ``<point>:<n>`` kills the process (SIGKILL) the n-th time
#: (default: the first) the named point is reached. For the fault-injection tests only.
FAULT_ENV = "MAMMO_FAULT_POINT"
_PARTIAL = ".partial-"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here, like ``kill -9``, when ``MAMMO_FAULT_POINT`` names this point."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


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
        taken = os.path.lexists(candidate) or any(
            os.path.lexists(directory / (candidate.name + c)) for c in companions
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


def _renameat2() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


_RENAMEAT2 = _renameat2()


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` atomically, raising FileExistsError if ``target``
    exists (checked by the kernel, so no other process can slip a file in between)."""
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(source), None, str(target))
    # No renameat2 here: a hard link cannot replace an existing name either.
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "target exists", str(target)) from exc
        os.rename(source, target)  # last resort: checked just above
        return
    os.unlink(source)


def move_file(source: Path, target: Path) -> Path:
    """Move ``source`` to ``target`` (which must not exist); atomic within one filesystem."""
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "exists; refusing to overwrite", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        rename_noreplace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(source, target)
    _fsync_dir(target.parent)
    _fsync_dir(source.parent)
    return target


def move_into(source: Path, directory: Path, name: str) -> Path:
    """Move ``source`` into ``directory`` under ``name`` or its first free ``name__N``
    variant (retried if another process takes the name meanwhile); returns the new path."""
    for _ in range(100):
        target = free_name(directory, name)
        try:
            return move_file(source, target)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name", str(directory / name))


def partial_copies(target: Path) -> list[Path]:
    """Leftover temporary copies of a cross-filesystem move to ``target`` (after a crash)."""
    prefix = f".{target.name}{_PARTIAL}"
    try:
        return [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []


def _copy_across(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}{_PARTIAL}{os.getpid()}")
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, tmp)
        fault_point("copying")  # a partial copy is left: the claim recovery removes it
        rename_noreplace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(target.parent)
    fault_point("copied")  # both names exist: the claim recovery keeps exactly one
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
    """Hold the exclusive lock of ``directory`` for one validation run (non-blocking: a clear
    :class:`MammoError` when another run holds it).

    The lock is ``flock`` on ``directory/.validate.lock``; the kernel releases it when the
    holder dies, even by ``kill -9``. The file is removed on release (so it is only seen while
    a run is active); an acquirer that locked a file removed meanwhile retries on the new one.
    """
    path = directory / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MammoError(f"cannot create the lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise MammoError(
                f"another validation run holds {directory} (lock file {path}); "
                "try again when it has finished"
            ) from exc
        except OSError as exc:
            os.close(fd)
            raise MammoError(f"cannot lock {path}: {exc.strerror}") from exc
        try:
            current = os.stat(path)
            held = os.fstat(fd)
            same = (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed that file; lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            os.unlink(path)  # while still holding it: nobody can lock this inode after us
        except OSError:
            pass
        os.close(fd)
