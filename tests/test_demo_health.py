"""The demo's Airflow is healthy, triggerer included (issue #22, item 3), without the demo.

The processes of ``make demo`` (:func:`demo.start_airflow`: scheduler, dag-processor,
triggerer, api-server) start on a fresh SQLite home under a temporary directory and a free
port; the api-server's ``GET /api/v2/monitor/health`` must report every component healthy
(the demo used to start no triggerer: a red "Triggerer" badge in the UI), the memory report
must see the processes, and stopping the recorded services must leave none running.
"""

from __future__ import annotations

import os
import time

import pytest

from mammo_pipeline.common.net import wait_http
from mammo_pipeline.common.processes import is_alive, running, stop_all
from mammo_pipeline.config import Settings
from mammo_pipeline.orchestration import demo
from mammo_pipeline.orchestration.airflow_cli import airflow, health
from mammo_pipeline.orchestration.airflow_env import airflow_env
from mammo_pipeline.orchestration.demo_status import process_memory
from tests.test_dags_e2e import _free_port

pytestmark = pytest.mark.slow


def test_demo_airflow_reports_every_component_healthy(tmp_path):
    settings = Settings(
        data_dir=tmp_path / "data",
        airflow_home=tmp_path / "airflow",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifact_location=str(tmp_path / "mlartifacts"),
    )
    port = _free_port()
    env = airflow_env(settings, api_port=port, extra={"AIRFLOW__CORE__PARALLELISM": "1"})
    state = tmp_path / "services.json"
    airflow(env, "db", "migrate")
    names = [name for name, _ in demo.airflow_processes(port)]
    assert "airflow-triggerer" in names
    try:
        demo.start_airflow(env, state=state, logs=tmp_path / "logs", api_port=port)
        assert wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", 240)
        deadline = time.time() + 180
        parts = health(port)
        while time.time() < deadline and not (
            parts and all(v == "healthy" for v in parts.values())
        ):
            time.sleep(5)
            parts = health(port)
        logs = {p.name: p.read_text()[-1500:] for p in (tmp_path / "logs").glob("*.log")}
        assert parts.get("triggerer") == "healthy", (parts, logs.get("airflow-triggerer.log"))
        assert all(v == "healthy" for v in parts.values()), (parts, logs)
        mem = process_memory(state)
        assert set(mem["by_service"]) == set(names)
        assert mem["processes"] >= len(names) and mem["rss"] > 0
    finally:
        pids = [svc.pid for svc in running(state).values()]
        stopped = stop_all(state)
    assert len(stopped) == len(names), stopped
    assert not [pid for pid in pids if is_alive(pid)]
    assert not os.path.exists(state)
