"""One registry-wide lock around every decision that moves the ``champion`` alias.

Gate-and-promote, approval, rejection, rollback and pinning hold it, and re-read the aliases
inside it, so that concurrent gates serialise and each candidate is compared with the
champion it would actually replace (two gates at once used to both "win").

Where the lock lives follows the store, so every process that can change the registry meets
the same lock:

* ``settings.registry_lock_uri`` (a PostgreSQL URI) when set: a session-level
  ``pg_advisory_lock`` on that database (the compose stack points it at MLflow's database,
  whose tracking server is reached over HTTP);
* a PostgreSQL tracking store: the same advisory lock on it;
* a SQLite store: an exclusive ``flock`` on ``<db file>.registry.lock`` beside the database;
* anything else (an HTTP server without ``registry_lock_uri``): an ``flock`` under
  ``<data_dir>/reports/`` (correct for one machine; multi-machine setups set the URI).

Waiting is bounded by ``registry_lock_timeout_s``; a timeout is a clear error, never a silent
promotion without the lock.

Whoever takes the lock first completes any action a killed process left half-written
(:func:`.journal.recover`); :func:`repairs` says what was done, for the action's own report.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mammo_pipeline.common.mlflow_access import store_uri
from mammo_pipeline.config import Settings
from mammo_pipeline.errors import MammoError

_SQLITE = "sqlite:///"
_POLL_S = 0.05
#: Re-entrancy: a thread already holding the lock (approve -> re-gate) does not wait on itself.
_held = threading.local()


class RegistryLockTimeout(MammoError):
    """Another gate or review held the registry lock for longer than the timeout."""


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a registered model name."""
    digest = hashlib.sha256(f"mammo-registry:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _postgres_uri(settings: Settings) -> str | None:
    uri = settings.registry_lock_uri or settings.mlflow_tracking_uri
    if uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        return uri.replace("postgresql+psycopg2://", "postgresql://", 1)
    return None


def lock_path(settings: Settings) -> Path:
    uri = store_uri(settings.mlflow_tracking_uri)
    if uri.startswith(_SQLITE):
        return Path(uri[len(_SQLITE) :] + ".registry.lock")
    return settings.reports / "registry.lock"


def describe_lock(settings: Settings) -> str:
    pg = _postgres_uri(settings)
    if pg:
        return f"PostgreSQL advisory lock on {pg.rsplit('@', 1)[-1]}"
    return f"file lock {lock_path(settings)}"


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise RegistryLockTimeout(
                        f"registry lock {path} held by another process for more than {timeout:.0f}s"
                    ) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(uri: str, key: int, timeout: float) -> Iterator[None]:
    import psycopg2

    conn = psycopg2.connect(uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            end = time.monotonic() + timeout
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= end:
                    raise RegistryLockTimeout(
                        f"registry advisory lock held by another session for more than "
                        f"{timeout:.0f}s"
                    )
                time.sleep(_POLL_S)
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


@contextlib.contextmanager
def registry_lock(settings: Settings) -> Iterator[None]:
    """Hold the registry-wide lock of ``settings.registered_model_name`` for the block
    (re-entrant within one thread). Taking it first completes any action a killed process
    left half-written (:func:`.journal.recover`, reported by :func:`repairs`)."""
    key = (
        settings.registry_lock_uri or settings.mlflow_tracking_uri,
        settings.registered_model_name,
    )
    held: set = getattr(_held, "keys", set())
    if key in held:
        yield
        return
    timeout = settings.registry_lock_timeout_s
    pg = _postgres_uri(settings)
    lock = (
        _advisory_lock(pg, _lock_key(settings.registered_model_name), timeout)
        if pg
        else _file_lock(lock_path(settings), timeout)
    )
    with lock:
        _held.keys = held | {key}
        try:
            from mammo_pipeline.registry.journal import recover

            _held.repairs = recover(settings)
            yield
        finally:
            _held.keys = held


def repairs() -> list[str]:
    """What the registry lock last taken by this thread repaired when it was taken (an
    interrupted action completed or cleared), in words; empty when nothing needed it."""
    return list(getattr(_held, "repairs", []))
