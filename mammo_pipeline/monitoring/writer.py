"""The service's prediction logger: asynchronous, bounded, never in the request's way.

``PredictionLogger.log(record)`` puts the record on a bounded queue and returns at once; a
background thread writes batches to the :class:`~.store.PredictionStore`. Whatever goes
wrong stays here: a full queue drops the record (``queue_full``), a store that cannot be
opened or written (disk full, read-only directory, database down) drops the batch
(``write_error``), a record with a :meth:`~.records.PredictionRecord.problem` is dropped
(``invalid``). Each drop is counted (:meth:`PredictionLogger.counters`, and the ``on_drop``
callback the service turns into a Prometheus counter); ``log`` never raises and never
waits. The store is reopened on the next batch after a failure, so logging resumes by
itself when the disk has room again.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Final

from mammo_pipeline.config import Settings
from mammo_pipeline.monitoring.records import PredictionRecord
from mammo_pipeline.monitoring.store import PredictionStore, open_store

logger = logging.getLogger(__name__)

DROP_REASONS: Final = ("queue_full", "write_error", "invalid")
_ERROR_LOG_EVERY_S = 60.0


class PredictionLogger:
    """Bounded asynchronous writer of prediction records (one per process).

    ``open_store`` is called in the writer thread (again after a failure); ``on_drop(reason,
    n)`` and ``on_written(n)`` are called for every drop and every written batch (exceptions
    they raise are ignored)."""

    def __init__(
        self,
        open_store: Callable[[], PredictionStore],
        *,
        capacity: int = 10_000,
        batch_size: int = 256,
        on_drop: Callable[[str, int], None] | None = None,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self._open_store = open_store
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=max(1, capacity))
        self._batch_size = max(1, batch_size)
        self._on_drop = on_drop
        self._on_written = on_written
        self._counts = {"logged": 0, "written": 0, **{r: 0 for r in DROP_REASONS}}
        self._counts_lock = threading.Lock()
        self._store: PredictionStore | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._last_error_log = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> PredictionLogger:
        """A logger on the configured store with the configured queue size."""
        kwargs.setdefault("capacity", settings.monitor_queue_size)
        return cls(lambda: open_store(settings), **kwargs)

    # -- the request side --------------------------------------------------------------
    def log(self, record: PredictionRecord) -> bool:
        """Queue ``record``; False when it was dropped. Never raises, never blocks."""
        try:
            self._ensure_thread()
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped("queue_full", 1)
            return False
        except Exception:  # noqa: BLE001 - monitoring must never fail a prediction
            self._dropped("write_error", 1)
            return False
        self._count("logged", 1)
        return True

    def counters(self) -> dict[str, int]:
        """``logged`` (accepted), ``written``, and the drops by reason (:data:`DROP_REASONS`)."""
        with self._counts_lock:
            return dict(self._counts)

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout``), stop the thread, close the store."""
        self.flush(timeout)
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------
    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or self._pid != pid or not self._thread.is_alive():
                self._pid = pid  # after a fork the parent's thread does not exist here
                self._store = None
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="mammo-prediction-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def _write(self, batch: list[PredictionRecord]) -> None:
        good = [r for r in batch if r.problem() is None]
        if len(good) < len(batch):
            self._dropped("invalid", len(batch) - len(good))
        if not good:
            return
        try:
            if self._store is None:
                self._store = self._open_store()
            self._store.add(good)
        except Exception as exc:  # noqa: BLE001 - disk full, read-only, database down ...
            self._dropped("write_error", len(good))
            self._log_error(exc)
            store, self._store = self._store, None
            if store is not None:
                try:
                    store.close()
                except Exception:  # noqa: BLE001
                    pass
            return
        self._count("written", len(good))
        self._call(self._on_written, len(good))

    # -- counting ----------------------------------------------------------------------
    def _count(self, key: str, n: int) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def _dropped(self, reason: str, n: int) -> None:
        self._count(reason, n)
        self._call(self._on_drop, reason, n)

    @staticmethod
    def _call(fn: Callable[..., None] | None, *args: object) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a metrics callback must not stop the writer
            pass

    def _log_error(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            logger.error(
                "prediction log: cannot write (%s: %s); records are dropped and counted "
                "until it can",
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
