"""Every DAG file parses cleanly, cheaply, and has the expected shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.orchestration.airflow_env import DAGS_FOLDER, airflow_env

HEAVY = ("tensorflow", "keras", "mlflow", "great_expectations", "bentoml", "sklearn", "torch")

PARSE_SCRIPT = r"""
import json, sys, time
t0 = time.time()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()},
       "seconds": time.time() - t0,
       "heavy": sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2])),
       "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "fileloc": dag.fileloc,
        "doc_md": bool(dag.doc_md),
        "params": sorted(dag.params.keys()),
        "tasks": {t.task_id: {"queue": t.queue, "pool": t.pool,
                              "downstream": sorted(t.downstream_task_ids),
                              "retries": t.retries,
                              "trigger_rule": str(t.trigger_rule)} for t in dag.tasks},
    }
    for t in dag.tasks:
        if hasattr(t, "options") and hasattr(t, "response_timeout"):  # Human-in-the-loop
            timeout = t.response_timeout
            out["dags"][dag_id]["tasks"][t.task_id]["hitl"] = {
                "type": type(t).__name__, "options": t.options, "defaults": t.defaults,
                "options_mapping": getattr(t, "options_mapping", None),
                "assigned_users": t.assigned_users, "params": sorted(t.params.keys()),
                "response_timeout_s": timeout.total_seconds() if timeout else None,
                "execution_timeout": str(t.execution_timeout) if t.execution_timeout else None,
            }
print("JSON" + json.dumps(out))
"""


def _parse(home, **settings) -> dict:
    env = airflow_env(Settings(airflow_home=home, data_dir=home / "data", **settings))
    r = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(DAGS_FOLDER), json.dumps(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout[r.stdout.index("JSON") + 4 :])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    return _parse(tmp_path_factory.mktemp("airflow"))


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


def test_dag_id_is_file_stem_and_documented(parsed):
    files = sorted(p.stem for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
    assert sorted(parsed["dags"]) == files
    for dag_id, dag in parsed["dags"].items():
        assert dag["fileloc"].endswith(f"{dag_id}.py")
        assert dag["doc_md"], dag_id


def test_parsing_imports_no_heavy_library(parsed):
    assert parsed["heavy"] == []


def test_retrain_graph_queues_and_params(parsed):
    dag = parsed["dags"]["mammo_retrain"]
    tasks = dag["tasks"]
    assert tasks["train"]["queue"] == "gpu" and tasks["train"]["pool"] == "mammo_gpu"
    assert tasks["train"]["retries"] >= 1
    assert all(t["queue"] != "gpu" for name, t in tasks.items() if name != "train")
    assert tasks["deploy"]["queue"] == "serving"  # runs where the service lives
    assert parsed["dags"]["mammo_deploy"]["tasks"]["redeploy"]["queue"] == "serving"
    chain = ["check_policy", "snapshot", "train", "evaluate", "register", "gate", "route"]
    for a, b in zip(chain, chain[1:], strict=False):
        assert b in tasks[a]["downstream"], (a, b)
    assert set(tasks["route"]["downstream"]) == {
        "await_approval",
        "approval_not_required",
        "report_gate_failure",
    }
    assert set(tasks["await_approval"]["downstream"]) == {"promote", "record_rejection"}
    assert "deploy" in tasks["promote"]["downstream"]
    assert tasks["record_rejection"]["downstream"] == []  # a rejection deploys nothing
    assert set(dag["params"]) >= {
        "epochs",
        "batch_size",
        "learning_rate",
        "image_size",
        "trainable_blocks",
        "max_records",
        "min_precision",
        "min_recall",
        "regression_tolerance",
        "gate_lower_bound",
        "require_approval",
    }


def test_approval_defaults_to_reject_and_branches(parsed):
    """The approval's timeout answer is Reject (never an approval), each answer runs its own
    task, the form asks for a reason, and with no approvers configured anyone may answer."""
    hitl = parsed["dags"]["mammo_retrain"]["tasks"]["await_approval"]["hitl"]
    assert hitl["options"] == ["Approve", "Reject"]
    assert hitl["defaults"] == ["Reject"]
    assert hitl["options_mapping"] == {"Approve": "promote", "Reject": "record_rejection"}
    assert hitl["params"] == ["reason"]
    assert hitl["response_timeout_s"] == 168 * 3600
    assert hitl["execution_timeout"] is None  # the response timeout (-> Reject) governs
    assert hitl["assigned_users"] is None


def test_approvers_and_timeout_come_from_the_settings(tmp_path):
    parsed = _parse(tmp_path, approvers=("alice", "bob"), approval_timeout_hours=2.5)
    assert parsed["errors"] == {}
    hitl = parsed["dags"]["mammo_retrain"]["tasks"]["await_approval"]["hitl"]
    assert hitl["assigned_users"] == [
        {"id": "alice", "name": "alice"},
        {"id": "bob", "name": "bob"},
    ]
    assert hitl["response_timeout_s"] == 2.5 * 3600
    assert hitl["defaults"] == ["Reject"]


def test_validate_dag_publishes_the_asset(parsed):
    tasks = parsed["dags"]["mammo_validate_incoming"]["tasks"]
    assert tasks["validate_landing"]["downstream"] == ["publish_validated"]
