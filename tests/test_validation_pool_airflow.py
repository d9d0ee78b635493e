"""Validation's worker pool runs inside an Airflow task (issue #22, item 2).

``airflow dags test --use-executor mammo_validate_incoming`` on two SYNTHETIC landing files:
the task runs as under the scheduler (LocalExecutor, a supervised task process that talks to
an api-server and whose ORM URL Airflow blocks), not in the ``dags test`` process itself, where
the bug did not show. The task's ``spawn`` workers must start (they used to re-run the
``airflow`` entry point and die on "Could not parse SQLAlchemy URL", after which every file was
validated in-process), and the task log must be quiet: no traceback, no Great Expectations
"Skipping registering function" lines. The Airflow environment is the one of
``tests/test_dags_e2e.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.test_dags_e2e import Env, _stop_group

pytestmark = pytest.mark.slow


@pytest.fixture
def airflow_world(tmp_path):
    from mammo_pipeline.data.synthetic import generate

    saved = dict(os.environ)
    w = Env(tmp_path)
    w.env["MAMMO_VALIDATION_WORKERS"] = "2"
    ds = generate(tmp_path / "incoming", 80, files=2, positive_fraction=0.3, seed=3,
                  test_n=20, progress=False)  # fmt: skip
    w.place(ds)
    assert w.run("db", "migrate").returncode == 0
    api = w.start("api-server", "--port", str(w.api_port), "--workers", "1", log="api.log")
    try:
        from mammo_pipeline.common.net import wait_http

        if not wait_http(f"http://127.0.0.1:{w.api_port}/api/v2/monitor/health", 240):
            pytest.fail(f"api-server did not start:\n{(tmp_path / 'api.log').read_text()[-3000:]}")
        yield w
    finally:
        _stop_group(api)
        os.environ.clear()
        os.environ.update(saved)


def _task_logs(w: Env) -> str:
    logs = Path(w.settings.airflow_home) / "logs"
    return "\n".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file())


def test_validation_task_profiles_in_its_worker_pool(airflow_world):
    w = airflow_world
    r = w.run("dags", "test", "--use-executor", "mammo_validate_incoming")
    out = r.stdout + r.stderr + _task_logs(w)
    assert r.returncode == 0, out[-5000:]
    assert len(list(w.settings.validated.glob("*.tfrecords"))) == 2, out[-5000:]
    pool = re.search(r"validation pool: (\d+) worker processes \(pids ([\d,]+)\)", out)
    assert pool, out[-5000:]
    assert int(pool.group(1)) == 2 and len(pool.group(2).split(",")) == 2
    assert "worker pool unavailable" not in out
    assert "Traceback" not in out, out[out.index("Traceback") - 500 :][:3000]
    assert "Skipping registering function" not in out
    for chatter in ("Multiple declarations of metric", "loading fluent config"):
        assert chatter not in out, out[out.index(chatter) - 300 :][:1000]
