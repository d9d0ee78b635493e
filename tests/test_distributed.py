"""The distributed deployment, run for real: Airflow with CeleryExecutor (Redis broker,
PostgreSQL metadata and result backend), a Celery worker on queues ``default`` and ``gpu``,
the scheduler, dag-processor and api-server, and an MLflow tracking server on PostgreSQL.
``mammo_retrain`` is triggered on tiny SYNTHETIC data through Airflow's REST API and must
succeed with training executed on the ``gpu`` queue, a champion in the registry and the run
visible through the tracking server.

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (``MAMMO_TEST_PG_DSN`` /
``MAMMO_TEST_REDIS_URL`` override them). Skip it locally with ``pytest -m "not distributed"``
or ``MAMMO_SKIP_DISTRIBUTED=1``. When the services are missing it is skipped with the reason,
except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_RUN_SETTINGS
from tests.distributed_stack import (
    BIN,
    DistributedStack,
    free_port,
    missing_drivers,
    services_problem,
)

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MAMMO_SKIP_DISTRIBUTED", "").lower() in {"1", "true", "yes"},
        reason="MAMMO_SKIP_DISTRIBUTED is set",
    ),
]

RUN_TIMEOUT_S = float(os.environ.get("MAMMO_DISTRIBUTED_TIMEOUT", "420"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _say(msg: str) -> None:
    """Progress for the CI log (shown live with -s, and on failure in captured output)."""
    print(f"[distributed {time.strftime('%H:%M:%S')}] {msg}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    drivers = missing_drivers()
    if drivers:  # a dependency of the project is missing: always a failure
        pytest.fail(drivers, pytrace=False)
    problem = services_problem()
    if problem:
        message = f"distributed test needs PostgreSQL and Redis: {problem}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    from mammo_pipeline.data.synthetic import generate

    root = tmp_path_factory.mktemp("distributed")
    saved_env = dict(os.environ)
    s = DistributedStack(root)
    try:
        s.configure(
            {
                "data_dir": str(root / "data"),
                "airflow_home": str(root / "airflow"),
                **TINY_RUN_SETTINGS,
                "serve_port": str(free_port()),
                "validation_workers": "1",
            }
        )
        settings = s.settings
        ds = generate(root / "incoming", 120, files=2, positive_fraction=0.3, seed=11,
                      test_n=40, progress=False)  # fmt: skip
        settings.test_split.mkdir(parents=True)
        for p in (ds.test_data, ds.test_labels):
            shutil.move(str(p), settings.test_split / Path(p).name)
        settings.validated.mkdir(parents=True)
        for f in ds.train_files:
            shutil.move(str(f), settings.validated / Path(f).name)

        _say(f"databases {s.af_db}, {s.mlf_db}; redis prefix {s.key_prefix}")
        s.create_databases()
        _say(f"mlflow server on :{s.mlflow_port}")
        s.start_mlflow()
        r = s.run(str(BIN / "airflow"), "db", "migrate", timeout=400)
        assert r.returncode == 0, (
            f"airflow db migrate failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        )
        r = s.run(str(BIN / "airflow"), "pools", "set", "mammo_gpu", "1", "GPU training slots")
        assert r.returncode == 0, r.stderr[-2000:]
        _say(f"airflow api-server on :{s.api_port}, scheduler, dag-processor, celery worker")
        s.start_airflow()
        s.wait_http(f"{s.mlflow_url}/health", 120, "mlflow server")
        s.wait_http(f"{s.api_url}/api/v2/monitor/health", 180, "airflow api-server")
        yield s
    except BaseException:
        _say("setup failed; component logs:\n" + s.log_tails())
        raise
    finally:
        _say("stopping the stack")
        try:
            stopped = s.stop()
            _say(f"stopped {stopped}")
        finally:
            os.environ.clear()
            os.environ.update(saved_env)


def _wait_for_dag(s: DistributedStack, dag_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.check_alive()
        status, body = s.api("GET", f"/api/v2/dags/{dag_id}")
        if status == 200:
            return
        time.sleep(2)
    raise AssertionError(f"{dag_id} was not parsed within {timeout:.0f}s\n" + s.log_tails())


def _task_instances(s: DistributedStack, dag_id: str, run_id: str) -> dict[str, dict]:
    status, body = s.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    assert status == 200, body
    return {ti["task_id"]: ti for ti in body["task_instances"]}


def _wait_for_run(s: DistributedStack, dag_id: str, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        s.check_alive()
        status, run = s.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        assert status == 200, run
        tis = _task_instances(s, dag_id, run_id)
        now = ", ".join(f"{k}={v['state']}" for k, v in tis.items() if v["state"])
        line = f"run {run['state']}: {now or 'no task started'}"
        if line != last:
            _say(line)
            last = line
        if run["state"] in ("success", "failed"):
            return run["state"]
        time.sleep(3)
    raise AssertionError(
        f"{dag_id} run {run_id} not finished after {RUN_TIMEOUT_S:.0f}s ({last})\n" + s.log_tails()
    )


def test_retrain_runs_on_celery_with_a_gpu_queue_and_a_tracking_server(stack):
    import mlflow

    s = stack
    settings = s.settings
    _wait_for_dag(s, "mammo_retrain")
    status, body = s.api("PATCH", "/api/v2/dags/mammo_retrain", {"is_paused": False})
    assert status == 200, body
    status, run = s.api(
        "POST", "/api/v2/dags/mammo_retrain/dagRuns", {"logical_date": None, "conf": {}}
    )
    assert status == 200, run
    run_id = run["dag_run_id"]
    _say(f"triggered mammo_retrain run {run_id} through the REST API")

    state = _wait_for_run(s, "mammo_retrain", run_id)
    tis = _task_instances(s, "mammo_retrain", run_id)
    summary = {k: (v["state"], v["queue"]) for k, v in tis.items()}
    assert state == "success", f"run ended {state}: {summary}\n{s.log_tails()}"

    # training ran on the gpu queue, in the gpu pool, executed by our Celery worker
    train = tis["train"]
    assert train["state"] == "success", summary
    assert train["queue"] == "gpu", summary
    assert train["pool"] == "mammo_gpu", summary
    assert tis["snapshot"]["queue"] == "default", summary
    assert tis["deploy"]["state"] == "success", summary
    worker_log = s.component("airflow-worker").log.read_text(errors="replace")
    assert "execute_workload" in worker_log and "task_id='train'" in worker_log, (
        "the Celery worker log does not show the train task:\n" + worker_log[-3000:]
    )
    assert run_id in worker_log, worker_log[-3000:]
    assert train["hostname"], train

    # the run and the champion, read through the tracking server over HTTP
    client = mlflow.MlflowClient(tracking_uri=s.mlflow_url, registry_uri=s.mlflow_url)
    model = client.get_registered_model(settings.registered_model_name)
    assert "champion" in model.aliases, model.aliases
    champion = client.get_model_version_by_alias(settings.registered_model_name, "champion")
    assert champion.tags.get("gate") == "passed", champion.tags
    assert champion.tags.get("airflow_run_id") == run_id, champion.tags
    tracked = client.get_run(champion.run_id)
    assert tracked.info.status == "FINISHED", tracked.info
    assert "test_precision" in tracked.data.metrics, tracked.data.metrics
    # artifacts went through the server's proxy into its artifact store
    assert tracked.info.artifact_uri.startswith("mlflow-artifacts:"), tracked.info.artifact_uri
    assert client.list_artifacts(champion.run_id), "no artifacts on the run"
    assert any((s.root / "mlartifacts").rglob("*")), "server artifact store is empty"
    # and nothing of it went to a local SQLite store
    assert not (s.root / "mlflow.db").exists()


def test_stop_leaves_nothing_behind(stack):
    """Stopping is idempotent and complete: processes gone, databases dropped, keys deleted
    (the fixture stops again at teardown; that second stop must be harmless)."""
    s = stack
    assert s.redis_keys(), "the Celery broker wrote no keys under the stack's prefix"
    s.stop()
    assert all(c.proc.poll() is not None for c in s.components)
    assert not s.leftovers(), f"processes left running: {s.leftovers()}"
    assert not s.database_exists(s.af_db) and not s.database_exists(s.mlf_db)
    assert not s.redis_keys()
    from mammo_pipeline.serving.deploy import read_state

    assert not read_state(s.settings)
