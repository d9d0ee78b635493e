"""The distributed deployment, run for real: Airflow with CeleryExecutor (Redis broker,
PostgreSQL metadata and result backend), a Celery worker on queues ``default`` and ``gpu``,
the scheduler, dag-processor and api-server, and an MLflow tracking server on PostgreSQL
with authentication on (MLflow's basic-auth app; users and permissions made by
``docker/mlflow_auth_init.py``, as in the compose stack). ``mammo_retrain`` is triggered on
tiny SYNTHETIC data through Airflow's REST API and must succeed, running as the MLflow
``writer``, with training executed on the ``gpu`` queue, a champion in the registry and the
run visible through the tracking server. Then the registry's access rules are checked over
HTTP: anonymous requests are refused (401); the serving host's read-only user can read and
download the champion but cannot move an alias or write a tag (403); the writer and the
reviewer can.

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (``MAMMO_TEST_PG_DSN`` /
``MAMMO_TEST_REDIS_URL`` override them). Skip it locally with ``pytest -m "not distributed"``
or ``MAMMO_SKIP_DISTRIBUTED=1``. When the services are missing it is skipped with the reason,
except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
                # This test is about the distributed shape (Celery queues, PostgreSQL, MLflow
                # auth); the gate's thresholds are exercised for real in test_dags_e2e.py, and
                # 120 tiles keep this run inside its time limit on 2 cores.
                "min_precision": "0.0",
                "min_recall": "0.0",
                "serve_port": str(free_port()),
                "validation_workers": "1",
            }
        )
        settings = s.settings
        # test_n=60: every lesion type (labels 1-4) is in the test split
        ds = generate(root / "incoming", 120, files=2, positive_fraction=0.3, seed=11,
                      test_n=60, progress=False)  # fmt: skip
        settings.test_split.mkdir(parents=True)
        for p in (ds.test_data, ds.test_labels):
            shutil.move(str(p), settings.test_split / Path(p).name)
        settings.validated.mkdir(parents=True)
        for f in ds.train_files:
            shutil.move(str(f), settings.validated / Path(f).name)

        # this process reads the registry as the serving host does (read-only user)
        os.environ.update(
            MLFLOW_TRACKING_USERNAME=s.mlflow_users["serving"][0],
            MLFLOW_TRACKING_PASSWORD=s.mlflow_users["serving"][1],
        )
        _say(f"databases {s.af_db}, {s.mlf_db}, {s.mlf_auth_db}; redis prefix {s.key_prefix}")
        s.create_databases()
        _say(f"mlflow server (basic-auth) on :{s.mlflow_port}; users and permissions")
        s.start_mlflow()
        s.start_mlflow_auth_init()  # waits for the server itself, beside `db migrate`
        r = s.run(str(BIN / "airflow"), "db", "migrate", timeout=400)
        assert r.returncode == 0, (
            f"airflow db migrate failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        )
        r = s.run(str(BIN / "airflow"), "pools", "set", "mammo_gpu", "1", "GPU training slots")
        assert r.returncode == 0, r.stderr[-2000:]
        _say(f"airflow api-server on :{s.api_port}, scheduler, dag-processor, celery worker")
        s.start_airflow()
        s.wait_http(f"{s.mlflow_url}/health", 120, "mlflow server")
        s.wait_one_shot("mlflow-auth-init", 180)
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


MODEL_API = "/api/2.0/mlflow/registered-models"
VERSION_API = "/api/2.0/mlflow/model-versions"


def test_registry_refuses_anonymous_and_read_only_writes(stack, tmp_path):
    """The access rules of the registry, after the run above made a champion."""
    s = stack
    name = s.settings.registered_model_name
    status, body = s.mlflow_api("GET", f"{MODEL_API}/alias", "serving",
                                {"name": name, "alias": "champion"})  # fmt: skip
    assert status == 200, body
    champion = body["model_version"]
    version, run_id = champion["version"], champion["run_id"]
    set_alias = {"name": name, "alias": "champion", "version": version}
    set_tag = {"name": name, "version": version, "key": "gate", "value": "passed"}

    # anonymous: nothing, not even reads (401, with a basic-auth challenge)
    for method, path, body in [
        ("GET", f"{MODEL_API}/get", {"name": name}),
        ("GET", f"{MODEL_API}/alias", {"name": name, "alias": "champion"}),
        ("GET", "/api/2.0/mlflow/experiments/search", {"max_results": 5}),
        ("POST", f"{MODEL_API}/alias", set_alias),
        ("POST", f"{VERSION_API}/set-tag", set_tag),
    ]:
        status, _ = s.mlflow_api(method, path, None, body)
        assert status == 401, (method, path, status)
    # a wrong password is not a user either
    real = s.mlflow_users["serving"]
    s.mlflow_users["serving"] = (real[0], real[1] + "x")
    try:
        assert s.mlflow_api("GET", f"{MODEL_API}/get", "serving", {"name": name})[0] == 401
    finally:
        s.mlflow_users["serving"] = real

    # the serving host's user reads everything it needs to load a model ...
    for path, body in [
        (f"{MODEL_API}/get", {"name": name}),
        (f"{VERSION_API}/get", {"name": name, "version": version}),
        ("/api/2.0/mlflow/runs/get", {"run_id": run_id}),
    ]:
        status, answer = s.mlflow_api("GET", path, "serving", body)
        assert status == 200, (path, answer)
    # ... but cannot move or delete an alias, nor write a tag (403)
    for method, path, body in [
        ("POST", f"{MODEL_API}/alias", set_alias),
        ("POST", f"{MODEL_API}/alias", {**set_alias, "alias": "auth-check"}),
        ("DELETE", f"{MODEL_API}/alias", {"name": name, "alias": "champion"}),
        ("POST", f"{VERSION_API}/set-tag", set_tag),
        ("POST", f"{MODEL_API}/set-tag", {"name": name, "key": "k", "value": "v"}),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": "k", "value": "v"}),
    ]:
        status, answer = s.mlflow_api(method, path, "serving", body)
        assert status == 403, (method, path, status, answer)

    # MLflow's own client, with MLflow's own variables, as on the serving host: the champion
    # downloads, an alias move is refused
    code = r"""
import json, sys, mlflow
from mlflow.exceptions import MlflowException
name, dst = sys.argv[1], sys.argv[2]
path = mlflow.artifacts.download_artifacts(f"models:/{name}@champion", dst_path=dst)
client = mlflow.MlflowClient()
try:
    client.set_registered_model_alias(name, "auth-check", "1")
    refused = None
except MlflowException as exc:
    refused = exc.get_http_status_code()
print(json.dumps({"path": path, "refused": refused}))
"""
    r = subprocess.run(
        [sys.executable, "-c", code, name, str(tmp_path / "champion")],
        env=s.mlflow_env("serving"), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert (Path(result["path"]) / "MLmodel").is_file(), result
    assert result["refused"] == 403, result

    # the writer (Airflow) and the reviewer (people) can change the registry
    for role in ("writer", "reviewer"):
        alias = {**set_alias, "alias": f"auth-check-{role}"}
        tag = {**set_tag, "key": f"auth_check_{role}", "value": "1"}
        for method, path, body in [
            ("POST", f"{MODEL_API}/alias", alias),
            ("DELETE", f"{MODEL_API}/alias", {"name": name, "alias": alias["alias"]}),
            ("POST", f"{VERSION_API}/set-tag", tag),
            ("DELETE", f"{VERSION_API}/delete-tag", {**tag, "value": None}),
        ]:
            body = {k: v for k, v in body.items() if v is not None}
            status, answer = s.mlflow_api(method, path, role, body)
            assert status == 200, (role, method, path, status, answer)
    # a reviewer acts on the registry, not on the runs
    status, _ = s.mlflow_api(
        "POST", "/api/2.0/mlflow/runs/set-tag", "reviewer",
        {"run_id": run_id, "key": "k", "value": "v"},
    )  # fmt: skip
    assert status == 403

    # nothing the refused requests tried stuck
    status, body = s.mlflow_api("GET", f"{MODEL_API}/get", "serving", {"name": name})
    aliases = {a["alias"]: a["version"] for a in body["registered_model"].get("aliases", [])}
    assert aliases.get("champion") == version and "auth-check" not in aliases, aliases
    status, body = s.mlflow_api("GET", f"{VERSION_API}/get", "serving",
                                {"name": name, "version": version})  # fmt: skip
    tags = {t["key"]: t["value"] for t in body["model_version"].get("tags", [])}
    assert tags.get("gate") == "passed" and not any(k.startswith("auth_check") for k in tags)


def test_stop_leaves_nothing_behind(stack):
    """Stopping is idempotent and complete: processes gone, databases dropped, keys deleted
    (the fixture stops again at teardown; that second stop must be harmless)."""
    s = stack
    assert s.redis_keys(), "the Celery broker wrote no keys under the stack's prefix"
    s.stop()
    assert all(c.proc.poll() is not None for c in s.components)
    assert not s.leftovers(), f"processes left running: {s.leftovers()}"
    for db in (s.af_db, s.mlf_db, s.mlf_auth_db):
        assert not s.database_exists(db), db
    assert not s.redis_keys()
    from mammo_pipeline.serving.deploy import read_state

    assert not read_state(s.settings)
