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
