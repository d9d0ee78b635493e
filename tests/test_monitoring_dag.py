"""``mammo_monitor`` in a real ``airflow dags test`` (SQLite Airflow, real MLflow store, a
real prediction log): unshifted SYNTHETIC traffic ends green with no Asset event; shifted
traffic fails ``fail_on_alert`` with the reason and publishes ``mammo://monitoring/alert``.
With MAMMO_RETRAIN_ON_ALERT, ``mammo_retrain`` is scheduled on that Asset."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.monitoring.policy import MONITOR_ALERT_ASSET
from mammo_pipeline.monitoring.store import open_store
from mammo_pipeline.orchestration.airflow_env import DAGS_FOLDER, airflow_env
from tests.monitoring_helpers import make_served_version, traffic

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
HOUR = 3600.0


def _world(root: Path, monkeypatch, **extra: str) -> tuple[Settings, dict[str, str]]:
    values = {
        "data_dir": str(root / "data"),
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow_artifact_location": str(root / "mlartifacts"),
        "airflow_home": str(root / "airflow"),
        "monitor_window_hours": "1",
        "monitor_since_days": "0.125",  # 3 h
        "auth": "none",
        **extra,
    }
    for k, v in values.items():
        monkeypatch.setenv(f"MAMMO_{k.upper()}", v)
    s = Settings()
    return s, airflow_env(s)


def _airflow(env: dict[str, str], root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )


def _alert_events(s: Settings) -> int:
    db = s.airflow_home / "airflow.db"
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT COUNT(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
            (MONITOR_ALERT_ASSET,),
        ).fetchone()[0]


def test_monitor_dag_alerts_on_shifted_traffic_only(tmp_path, monkeypatch):
    s, env = _world(tmp_path, monkeypatch)
    v = make_served_version(s)
    assert _airflow(env, tmp_path, "db", "migrate").returncode == 0
    now = time.time()
    store = open_store(s)
    store.add(traffic(450, v, start=now - 3 * HOUR + 60, span_s=3 * HOUR - 120))
    store.close()

    r = _airflow(env, tmp_path, "dags", "test", "mammo_monitor")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "state=success" in out, out[-4000:]
    assert _alert_events(s) == 0

    store = open_store(s)  # two more hours of brighter images (a new scanner's window)
    store.add(
        traffic(300, v, start=now - 2 * HOUR + 60, span_s=2 * HOUR - 120, seed=7, brightness=45)
    )
    store.close()
    r = _airflow(env, tmp_path, "dags", "test", "mammo_monitor")
    out = r.stdout + r.stderr
    assert "state=failed" in out or r.returncode != 0, out[-4000:]
    assert "monitoring alert on mammo-vgg16 v1: drift in 2 consecutive window(s)" in out
    assert _alert_events(s) == 1


PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["mammo_retrain"]
print("URIS" + repr(dag.timetable.asset_condition))
"""


@pytest.mark.parametrize("on_alert", [False, True])
def test_retrain_is_scheduled_on_the_alert_only_when_asked(tmp_path, monkeypatch, on_alert):
    _, env = _world(tmp_path, monkeypatch, retrain_on_alert=str(on_alert).lower())
    r = subprocess.run(
        [sys.executable, "-c", PARSE, str(DAGS_FOLDER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    uris = r.stdout[r.stdout.index("URIS") + 4 :]
    assert (MONITOR_ALERT_ASSET in uris) is on_alert
    assert "mammo_validated_data" in uris


def _queued_for(s: Settings, asset_uri: str) -> list[str]:
    """DAGs Airflow has queued a run for on ``asset_uri`` (what its scheduler turns into
    asset-triggered runs)."""
    with sqlite3.connect(s.airflow_home / "airflow.db") as conn:
        rows = conn.execute(
            "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
            "WHERE a.uri = ?",
            (asset_uri,),
        ).fetchall()
    return [r[0] for r in rows]


def _gate_of(s: Settings, version: str) -> dict[str, str]:
    from mammo_pipeline.common.mlflow_access import mlflow_client

    return dict(mlflow_client(s).get_model_version(s.registered_model_name, version).tags)


def test_an_alert_queues_mammo_retrain(tmp_path, monkeypatch):
    """With MAMMO_RETRAIN_ON_ALERT: an ordinary retrain serves v1 (through the full gate);
    shifted traffic makes ``mammo_monitor`` publish the alert, and Airflow queues
    ``mammo_retrain`` on it: the row its scheduler turns into an asset-triggered run. That run
    is the same DAG with the same tasks as v1's (none of them reads the triggering event, and
    the gate policy is the deployment's), so it gates as v1's run did here and as every run
    of tests/test_dags_e2e.py does; running it again cost 50 s of ``make test`` and showed
    nothing new. Small SYNTHETIC data (TINY_RUN_SETTINGS: random weights, 64 px)."""
    import os

    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.data.synthetic import generate
    from mammo_pipeline.serving.deploy import stop_service
    from tests.conftest import TINY_RUN_SETTINGS

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    tiny = {**TINY_RUN_SETTINGS, "serve_port": str(free_port())}
    s, env = _world(tmp_path, monkeypatch, retrain_on_alert="true", **tiny)
    ds = generate(tmp_path / "incoming", 400, files=2, positive_fraction=0.3, seed=5,
                  test_n=100, views_per_lesion=1, progress=False)  # fmt: skip
    s.test_split.mkdir(parents=True)
    for p in (ds.test_data, ds.test_labels):
        os.replace(p, s.test_split / Path(p).name)
    s.landing.mkdir(parents=True)
    for f in ds.train_files:
        os.replace(f, s.landing / Path(f).name)
    for args in (("db", "migrate"), ("pools", "set", "mammo_gpu", "1", "GPU training slots")):
        assert _airflow(env, tmp_path, *args).returncode == 0
    try:
        for dag in ("mammo_validate_incoming", "mammo_retrain"):  # the ordinary run: v1
            r = _airflow(env, tmp_path, "dags", "test", dag)
            assert r.returncode == 0 and "state=success" in r.stdout + r.stderr, r.stderr[-4000:]
        first = _gate_of(s, "1")
        assert first["gate"] == "passed", first.get("gate_reasons")
        assert first["gate_checks"] and first["signed_decision"], first.keys()

        # DAGs in the metadata database, retraining unpaused: as a deployment's scheduler has
        for args in (("dags", "reserialize"), ("dags", "unpause", "mammo_retrain")):
            r = _airflow(env, tmp_path, *args)
            assert r.returncode == 0, r.stderr[-3000:]
        now = time.time()
        store = open_store(s)  # two hours of traffic unlike v1's held-out set
        store.add(traffic(300, "1", start=now - 2 * HOUR + 60, span_s=2 * HOUR - 120,
                          seed=7, brightness=45, score_shift=1.5))  # fmt: skip
        store.close()
        r = _airflow(env, tmp_path, "dags", "test", "mammo_monitor")
        out = r.stdout + r.stderr
        assert "monitoring alert on mammo-vgg16 v1: drift" in out, out[-4000:]
        assert _alert_events(s) == 1
        assert _queued_for(s, MONITOR_ALERT_ASSET) == ["mammo_retrain"]
    finally:
        stop_service(s)
