"""Where prediction records and feedback are kept: one interface, two back ends.

:class:`PredictionStore` is what the service's logger, the feedback endpoint, the CLI and
the monitor use. Two implementations share one schema and one SQL text (tables
``mammo_predictions`` and ``mammo_feedback``, times as seconds since the epoch; and
``mammo_monitor_reports``, one row per logged monitoring report for the dashboards):

- :class:`SQLiteStore`, the embedded default, one file ``<data dir>/monitoring/
  predictions.sqlite`` in WAL mode (several service workers append while the monitor reads;
  why SQLite rather than rotated Parquet: docs/monitoring.md);
- :class:`PostgresStore`, the distributed shape (``MAMMO_MONITOR_STORE_URI=postgresql://...``).

Records are append-only and idempotent on ``request_id``; feedback is idempotent per
``request_id`` (the same outcome again changes nothing, a different one is refused, 409) and
needs a logged record (404 otherwise). :meth:`PredictionStore.purge` applies the retention.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mammo_pipeline.config import Settings
from mammo_pipeline.errors import ConfigError
from mammo_pipeline.monitoring.feedback import Feedback, FeedbackError
from mammo_pipeline.monitoring.records import COLUMNS, PredictionRecord

RECORDS_TABLE = "mammo_predictions"
FEEDBACK_TABLE = "mammo_feedback"
STORE_FILE = "predictions.sqlite"
_TYPES = {
    "time": "DOUBLE PRECISION NOT NULL",
    "score": "DOUBLE PRECISION",
    "threshold": "DOUBLE PRECISION",
    "latency_ms": "DOUBLE PRECISION",
    "pixel_spacing_mm": "DOUBLE PRECISION",
    "input_mean": "DOUBLE PRECISION",
    "input_std": "DOUBLE PRECISION",
    "saturated_fraction": "DOUBLE PRECISION",
    "width": "INTEGER",
    "height": "INTEGER",
    "bit_depth": "INTEGER",
    "tiles_scored": "INTEGER",
    "synthetic": "INTEGER",
    "request_id": "TEXT PRIMARY KEY",
    "model_name": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "endpoint": "TEXT NOT NULL",
    "status": "TEXT NOT NULL",
}
#: SQL column names: ``time`` is ``ts`` (a type name in PostgreSQL).
_SQL = {c: ("ts" if c == "time" else c) for c in COLUMNS}
_FEEDBACK_COLS = ("request_id", "outcome", "source", "who", "ts")
REPORTS_TABLE = "mammo_monitor_reports"
#: One row per logged report: its newest window's figures and the report's alert (read by
#: Grafana's drift and alert panels; NULL where a figure is undefined).
REPORT_TYPES = {
    "ts": "DOUBLE PRECISION NOT NULL",
    "model_name": "TEXT NOT NULL",
    "model_version": "TEXT NOT NULL",
    "window_start": "DOUBLE PRECISION",
    "window_end": "DOUBLE PRECISION",
    "n_tiles": "INTEGER",
    "sufficient": "INTEGER",
    "drifts": "INTEGER",
    "score_psi": "DOUBLE PRECISION",
    "score_p_value": "DOUBLE PRECISION",
    "input_mean_psi": "DOUBLE PRECISION",
    "input_mean_p_value": "DOUBLE PRECISION",
    "input_std_psi": "DOUBLE PRECISION",
    "input_std_p_value": "DOUBLE PRECISION",
    "positive_rate": "DOUBLE PRECISION",
    "expected_positive_rate": "DOUBLE PRECISION",
    "sensitivity": "DOUBLE PRECISION",
    "sensitivity_low": "DOUBLE PRECISION",
    "sensitivity_high": "DOUBLE PRECISION",
    "n_feedback": "INTEGER",
    "alert": "INTEGER NOT NULL",
    "alert_reason": "TEXT",
}
REPORT_COLUMNS = tuple(REPORT_TYPES)
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {RECORDS_TABLE} ("
    + ", ".join(f"{_SQL[c]} {_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    + ")",
    f"CREATE INDEX IF NOT EXISTS {RECORDS_TABLE}_ts ON {RECORDS_TABLE} (ts)",
    f"CREATE TABLE IF NOT EXISTS {FEEDBACK_TABLE} (request_id TEXT PRIMARY KEY, "
    "outcome TEXT NOT NULL, source TEXT NOT NULL, who TEXT NOT NULL, "
    "ts DOUBLE PRECISION NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {REPORTS_TABLE} ("
    + ", ".join(f"{c} {t}" for c, t in REPORT_TYPES.items())
    + ", PRIMARY KEY (model_name, model_version, ts))",
)
_SELECT = ", ".join(f"p.{_SQL[c]}" for c in COLUMNS)


class PredictionStore:
    """The prediction log and its feedback. Thread-safe; one connection per store object."""

    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None

    # -- back-end specific -------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the store is, in words (no password)."""
        raise NotImplementedError

    # -- plumbing ----------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor in a transaction: committed on success, rolled back on any error."""
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
                cur = self._conn.cursor()
                for statement in SCHEMA:
                    cur.execute(statement)
                self._conn.commit()
            cur = self._conn.cursor()
            try:
                yield cur
                self._conn.commit()
            except BaseException:
                try:
                    self._conn.rollback()
                except Exception:  # noqa: BLE001 - a dead connection: reconnect next time
                    self._drop_connection()
                raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    # -- records -----------------------------------------------------------------------
    def add(self, records: Sequence[PredictionRecord]) -> int:
        """Append records (a record whose ``request_id`` is already logged is left as it
        was); returns how many were given. A record with a :meth:`~PredictionRecord.problem`
        raises ``ValueError`` before anything is written."""
        for r in records:
            problem = r.problem()
            if problem:
                raise ValueError(f"record {r.request_id!r}: {problem}")
        if not records:
            return 0
        cols = ", ".join(_SQL[c] for c in COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        sql = self._q(
            f"INSERT INTO {RECORDS_TABLE} ({cols}) VALUES ({marks}) "
            "ON CONFLICT (request_id) DO NOTHING"
        )
        rows = [tuple(row[c] for c in COLUMNS) for row in (r.to_row() for r in records)]
        with self._cursor() as cur:
            cur.executemany(sql, rows)
        return len(rows)

    def records(
        self,
        since: float,
        until: float | None = None,
        *,
        version: str | None = None,
        model_name: str | None = None,
    ) -> list[PredictionRecord]:
        """Records with ``since <= time < until`` (of one version / model), oldest first."""
        where, args = self._where(since, until, version, model_name)
        sql = self._q(f"SELECT {_SELECT} FROM {RECORDS_TABLE} p WHERE {where} ORDER BY p.ts")
        with self._cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        return [PredictionRecord.from_row(dict(zip(COLUMNS, row, strict=True))) for row in rows]

    def labelled(
        self,
        since: float,
        until: float | None = None,
        *,
        version: str | None = None,
        model_name: str | None = None,
    ) -> list[tuple[PredictionRecord, Feedback]]:
        """Records of that period that have feedback, with it."""
        where, args = self._where(since, until, version, model_name)
        sql = self._q(
            f"SELECT {_SELECT}, f.outcome, f.source, f.who, f.ts FROM {RECORDS_TABLE} p "
            f"JOIN {FEEDBACK_TABLE} f ON f.request_id = p.request_id WHERE {where} ORDER BY p.ts"
        )
        with self._cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        out = []
        n = len(COLUMNS)
        for row in rows:
            rec = PredictionRecord.from_row(dict(zip(COLUMNS, row[:n], strict=True)))
            outcome, source, who, ts = row[n:]
            out.append((rec, Feedback(rec.request_id, outcome, source, who, float(ts))))
        return out

    @staticmethod
    def _where(
        since: float, until: float | None, version: str | None, model_name: str | None
    ) -> tuple[str, list[Any]]:
        parts, args = ["p.ts >= ?"], [float(since)]
        if until is not None:
            parts.append("p.ts < ?")
            args.append(float(until))
        if version is not None:
            parts.append("p.model_version = ?")
            args.append(str(version))
        if model_name is not None:
            parts.append("p.model_name = ?")
            args.append(model_name)
        return " AND ".join(parts), args

    # -- feedback ----------------------------------------------------------------------
    def add_feedback(self, feedback: Sequence[Feedback]) -> dict[str, int]:
        """Record outcomes, all or nothing: ``{"added": n, "unchanged": m}``.

        Raises :class:`FeedbackError`: 422 for a bad value, 404 for a ``request_id`` that
        was never logged (or was purged), 409 for a different outcome than the one already
        recorded (a resend of the same outcome and source is a no-op)."""
        for fb in feedback:
            fb.checked()
        added = unchanged = 0
        seen: dict[str, Feedback] = {}
        with self._cursor() as cur:
            for fb in feedback:
                if fb.request_id in seen:
                    prior = seen[fb.request_id]
                else:
                    prior = self._existing(cur, fb.request_id)
                if prior is not None:
                    if not prior.same_as(fb):
                        raise FeedbackError(
                            f"request {fb.request_id}: outcome {prior.outcome} ({prior.source}, "
                            f"by {prior.who}) is already recorded; refusing {fb.outcome} "
                            f"({fb.source})",
                            status=409,
                        )
                    unchanged += 1
                    continue
                cur.execute(
                    self._q(f"SELECT 1 FROM {RECORDS_TABLE} WHERE request_id = ?"),
                    (fb.request_id,),
                )
                if cur.fetchone() is None:
                    raise FeedbackError(f"unknown request_id {fb.request_id!r}", status=404)
                cur.execute(
                    self._q(
                        f"INSERT INTO {FEEDBACK_TABLE} ({', '.join(_FEEDBACK_COLS)}) "
                        "VALUES (?, ?, ?, ?, ?)"
                    ),
                    (fb.request_id, fb.outcome, fb.source, fb.who, fb.time),
                )
                seen[fb.request_id] = fb
                added += 1
        return {"added": added, "unchanged": unchanged}

    def _existing(self, cur: Any, request_id: str) -> Feedback | None:
        cur.execute(
            self._q(f"SELECT outcome, source, who, ts FROM {FEEDBACK_TABLE} WHERE request_id = ?"),
            (request_id,),
        )
        row = cur.fetchone()
        return None if row is None else Feedback(request_id, row[0], row[1], row[2], row[3])

    # -- monitoring reports (dashboards) -------------------------------------------------
    def add_report(self, row: dict[str, Any]) -> None:
        """Keep one report's row (:data:`REPORT_COLUMNS`; a missing key is NULL). A second
        row of the same version and time is ignored."""
        unknown = set(row) - set(REPORT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown report columns: {', '.join(sorted(unknown))}")
        marks = ", ".join("?" for _ in REPORT_COLUMNS)
        sql = self._q(
            f"INSERT INTO {REPORTS_TABLE} ({', '.join(REPORT_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT DO NOTHING"
        )
        with self._cursor() as cur:
            cur.execute(sql, tuple(row.get(c) for c in REPORT_COLUMNS))

    def reports(self, since: float) -> list[dict[str, Any]]:
        """Report rows with ``ts >= since``, oldest first."""
        sql = self._q(
            f"SELECT {', '.join(REPORT_COLUMNS)} FROM {REPORTS_TABLE} WHERE ts >= ? ORDER BY ts"
        )
        with self._cursor() as cur:
            cur.execute(sql, (float(since),))
            rows = cur.fetchall()
        return [dict(zip(REPORT_COLUMNS, row, strict=True)) for row in rows]

    # -- retention ---------------------------------------------------------------------
    def purge(self, before: float) -> dict[str, int]:
        """Delete records older than ``before`` and their feedback; returns the counts."""
        with self._cursor() as cur:
            cur.execute(
                self._q(
                    f"DELETE FROM {FEEDBACK_TABLE} WHERE request_id IN "
                    f"(SELECT request_id FROM {RECORDS_TABLE} WHERE ts < ?)"
                ),
                (float(before),),
            )
            feedback = cur.rowcount
            cur.execute(self._q(f"DELETE FROM {RECORDS_TABLE} WHERE ts < ?"), (float(before),))
            records = cur.rowcount
            cur.execute(self._q(f"DELETE FROM {REPORTS_TABLE} WHERE ts < ?"), (float(before),))
            return {"records": records, "feedback": feedback}


class SQLiteStore(PredictionStore):
    """The embedded store: one SQLite file (WAL; a busy writer is waited for up to 5 s)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def describe(self) -> str:
        return f"SQLite file {self.path}"


class PostgresStore(PredictionStore):
    """The distributed store: two tables in a PostgreSQL database (psycopg2)."""

    placeholder = "%s"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn

    def _connect(self) -> Any:
        import psycopg2

        return psycopg2.connect(self.dsn, connect_timeout=10)

    def describe(self) -> str:
        from urllib.parse import urlsplit

        u = urlsplit(self.dsn)
        return f"PostgreSQL {u.hostname}:{u.port or 5432}{u.path}"


def store_location(settings: Settings) -> str:
    """The configured store as a URI (the embedded default spelled out)."""
    uri = settings.monitor_store_uri
    if uri:
        return uri
    return f"sqlite:///{(settings.data_dir / 'monitoring' / STORE_FILE).resolve()}"


def open_store(settings: Settings) -> PredictionStore:
    """The configured store; nothing is created until the first read or write."""
    uri = store_location(settings)
    if uri.startswith(("postgresql://", "postgres://")):
        return PostgresStore(uri)
    if uri.startswith("sqlite:///"):
        return SQLiteStore(Path(uri[len("sqlite:///") :]))
    raise ConfigError(
        f"MAMMO_MONITOR_STORE_URI={uri!r}: expected postgresql://... or sqlite:///PATH"
    )


def store_exists(settings: Settings) -> bool:
    """False only for an embedded store whose file does not exist (nothing logged yet)."""
    uri = store_location(settings)
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).is_file()
