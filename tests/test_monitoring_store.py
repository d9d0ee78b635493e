"""The prediction log on both back ends (SQLite embedded, PostgreSQL distributed), feedback
idempotency, retention, and the logger that never gets in a request's way: a full queue, an
unwritable directory or a full disk drop records and count them, and ``log()`` neither
raises nor waits."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from mammo_pipeline.monitoring.feedback import FeedbackError, make_feedback
from mammo_pipeline.monitoring.records import PredictionRecord
from mammo_pipeline.monitoring.store import PostgresStore, PredictionStore, SQLiteStore
from mammo_pipeline.monitoring.writer import PredictionLogger
from tests.monitoring_helpers import traffic

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def postgres_store():
    from tests.distributed_stack import pg_dsn

    try:
        import psycopg2

        admin = psycopg2.connect(pg_dsn(), connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - not reachable: skip locally, fail in CI
        if IN_CI:
            pytest.fail(f"PostgreSQL at {pg_dsn()}: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL not reachable at {pg_dsn()}: {exc}")
    admin.autocommit = True
    name = f"mammo_monitor_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_dsn().rpartition("/")
    store = PostgresStore(f"{base}/{name}")
    try:
        yield store
    finally:
        store.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.distributed)])
def store(request, tmp_path) -> PredictionStore:
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "monitoring" / "predictions.sqlite")
        yield s
        s.close()
    else:
        yield request.getfixturevalue("postgres_store")


def test_records_round_trip_and_are_idempotent(store):
    t0 = time.time() - 3600
    recs = traffic(20, "1", start=t0, span_s=600) + traffic(5, "2", start=t0, span_s=600, seed=9)
    store.add(recs)
    store.add(recs[:3])  # a resend changes nothing
    got = store.records(t0 - 1, version="1", model_name="mammo-vgg16")
    assert [r.request_id for r in got] == [
        r.request_id for r in sorted(recs[:20], key=lambda r: r.time)
    ]
    assert got[0] == sorted(recs[:20], key=lambda r: r.time)[0]  # every field, synthetic too
    assert len(store.records(t0 - 1)) == 25
    assert store.records(t0 + 10_000) == []


def test_invalid_records_are_refused(store):
    bad = PredictionRecord.now(
        request_id="x",
        model_name="m",
        model_version="1",
        endpoint="predict",
        status="ok",
        score=float("nan"),
        label="negative",
        threshold=0.5,
    )
    with pytest.raises(ValueError, match="finite score"):
        store.add([bad])
    nonfinite = PredictionRecord.now(
        request_id="y",
        model_name="m",
        model_version="1",
        endpoint="predict",
        status="nonfinite",
        score=None,
        label=None,
        threshold=0.5,
    )
    store.add([nonfinite])  # a failed prediction is logged as such, never as a negative


def test_feedback_is_idempotent_and_refuses_unknown_and_conflicting(store):
    recs = traffic(3, "1", start=time.time() - 60, span_s=30)
    store.add(recs)
    rid = recs[0].request_id
    assert store.add_feedback([make_feedback(rid, "Malignant", "biopsy", "dr-a")]) == {
        "added": 1,
        "unchanged": 0,
    }
    again = store.add_feedback([make_feedback(rid, "malignant", "biopsy", "dr-b")])
    assert again == {"added": 0, "unchanged": 1}
    with pytest.raises(FeedbackError, match="already recorded") as conflict:
        store.add_feedback([make_feedback(rid, "normal", "biopsy", "dr-a")])
    assert conflict.value.status == 409
    with pytest.raises(FeedbackError, match="unknown request_id") as unknown:
        store.add_feedback(
            [
                make_feedback(recs[1].request_id, "benign", "reader", "a"),
                make_feedback("nope", "benign", "reader", "a"),
            ]
        )
    assert unknown.value.status == 404
    # all or nothing: the valid first row of the refused batch was not kept
    assert [f.request_id for _, f in store.labelled(0)] == [rid]
    with pytest.raises(FeedbackError, match="outcome must be one of") as bad:
        make_feedback(rid, "cancer", "biopsy", "a")
    assert bad.value.status == 422


def test_retention_deletes_old_records_and_their_feedback(store):
    now = time.time()
    old = traffic(4, "1", start=now - 10 * 86400, span_s=60)
    new = traffic(4, "1", start=now - 60, span_s=30, seed=3)
    store.add(old + new)
    store.add_feedback([make_feedback(old[0].request_id, "benign", "biopsy", "a")])
    assert store.purge(now - 5 * 86400) == {"records": 4, "feedback": 1}
    assert len(store.records(0)) == 4 and store.labelled(0) == []


# ------------------------------------------------------------------ the logger
def test_logger_writes_in_the_background(tmp_path):
    log = PredictionLogger(lambda: SQLiteStore(tmp_path / "p.sqlite"), capacity=1000)
    recs = traffic(200, "1", start=time.time() - 60, span_s=30)
    assert all(log.log(r) for r in recs)
    assert log.flush(30)
    log.close()
    assert log.counters()["written"] == 200
    assert len(SQLiteStore(tmp_path / "p.sqlite").records(0)) == 200


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    release = __import__("threading").Event()

    class SlowStore(SQLiteStore):
        def add(self, records):
            release.wait(30)
            return super().add(records)

    drops: list[tuple[str, int]] = []
    log = PredictionLogger(
        lambda: SlowStore(tmp_path / "p.sqlite"),
        capacity=5,
        batch_size=1,
        on_drop=lambda reason, n: drops.append((reason, n)),
    )
    recs = traffic(50, "1", start=time.time() - 60, span_s=30)
    accepted = sum(log.log(r) for r in recs)  # returns at once even though writes are stuck
    release.set()
    assert log.flush(30)
    c = log.counters()
    assert c["queue_full"] == 50 - accepted > 0 and ("queue_full", 1) in drops
    assert c["written"] == accepted


def test_unwritable_directory_drops_and_counts(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked / ".", os.W_OK) and os.geteuid() == 0:
        # root writes anywhere: make the place a file so the store cannot be created
        locked.chmod(0o700)
        (locked / "monitoring").write_text("not a directory")
    log = PredictionLogger(lambda: SQLiteStore(locked / "monitoring" / "p.sqlite"))
    recs = traffic(30, "1", start=time.time() - 60, span_s=30)
    assert all(log.log(r) is True for r in recs)  # accepted: the failure is the writer's
    assert log.flush(30)
    c = log.counters()
    assert c["write_error"] == 30 and c["written"] == 0


def test_full_disk_drops_and_counts(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {r.stderr.strip()}")
    try:
        log = PredictionLogger(
            lambda: SQLiteStore(mnt / "p.sqlite"), capacity=100_000, batch_size=500
        )
        recs = traffic(5000, "1", start=time.time() - 60, span_s=30)
        t0 = time.perf_counter()
        results = [log.log(r) for r in recs]
        per_call = (time.perf_counter() - t0) / len(recs)
        assert all(results)
        assert log.flush(60)
        c = log.counters()
        assert c["write_error"] > 0 and c["written"] + c["write_error"] == 5000
        print(f"full disk: {c}, log() {per_call * 1e6:.1f} us per call")
        log.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
