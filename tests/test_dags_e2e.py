"""The DAGs end to end with `airflow dags test` on small SYNTHETIC data, with the gate on:
SQLite Airflow, SQLite MLflow, a real BentoML process and, for the approvals, a real Airflow
api-server with named users.

In order (one registry, one live service for the module):

1. validation, then retraining under the deployment's real thresholds (TINY_RUN_SETTINGS):
   v1 passes, becomes champion and is served;
2. a trigger that loosens the policy (min_recall=0.0) fails the run at check_policy, before
   anything is trained;
3. a crippled candidate (a few records, one epoch at a tiny learning rate) is refused by the
   gate and the old champion keeps serving on the live port;
4. with require_approval, the run waits in Airflow's Required Actions: a user who is not an
   approver is refused by Airflow, an approver's Approve promotes the version with their
   name as the reviewer and it is deployed;
5. an approver's Reject marks the version rejected with who and why; nothing is deployed;
   no answer before the (shortened) timeout is a Reject too, resolved by the scheduler's
   own timeout sweep;
6. mammo_deploy refuses unvetted and rejected versions, and promotes a vetted one with the
   triggering user recorded as the reviewer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mammo_pipeline.config import Settings
from mammo_pipeline.orchestration.airflow_env import airflow_env
from tests.conftest import TINY_RUN_SETTINGS

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
#: Airflow users of the api-server (simple auth manager); alice and bob are the approvers.
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "mallory": "mallory-pw-333"}
APPROVERS = ["alice", "bob", "dag_test"]  # dag_test: `airflow dags test`'s user (manual deploy)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.values = {
            "data_dir": str(root / "data"),
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifact_location": str(root / "mlartifacts"),
            "airflow_home": str(root / "airflow"),
            **TINY_RUN_SETTINGS,
            "serve_port": str(_free_port()),
            "approvers": json.dumps(APPROVERS),
        }
        os.environ.update({f"MAMMO_{k.upper()}": v for k, v in self.values.items()})
        os.environ["BENTOML_HOME"] = str(root / "bentoml")
        self.settings = Settings()
        self.api_port = _free_port()
        passwords = root / "airflow-passwords.json"
        passwords.write_text(json.dumps(USERS))
        self.env = airflow_env(
            self.settings,
            api_port=self.api_port,
            extra={
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:admin" for u in USERS),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            },
        )

    def run(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def start(self, *args: str, log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.root / log, "wb") as fh:
            return subprocess.Popen(
                [str(BIN / "airflow"), *args],
                env={**self.env, **(env or {})},
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )

    def place(self, ds) -> None:
        """Move a generated data set in: its test split to the test folder, its training
        files to landing (where validation finds them)."""
        self.settings.test_split.mkdir(parents=True)
        for p in (ds.test_data, ds.test_labels):
            os.replace(p, self.settings.test_split / Path(p).name)
        self.settings.landing.mkdir(parents=True)
        for f in ds.train_files:
            os.replace(f, self.settings.landing / Path(f).name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mammo_pipeline.data.synthetic import generate

    root = tmp_path_factory.mktemp("e2e")
    saved = dict(os.environ)
    w = Env(root)
    # Independent tiles (one view per lesion) and 100 test tiles: enough for the tiny model to
    # clear the real thresholds with a margin (measured: precision 0.48, recall 0.93).
    ds = generate(
        root / "incoming",
        400,
        files=2,
        positive_fraction=0.3,
        seed=5,
        test_n=100,
        views_per_lesion=1,
        progress=False,
    )
    w.place(ds)
    assert w.run("db", "migrate").returncode == 0
    assert w.run("pools", "set", "mammo_gpu", "1", "GPU training slots").returncode == 0
    yield w
    from mammo_pipeline.serving.deploy import stop_service

    stop_service(w.settings)
    os.environ.clear()
    os.environ.update(saved)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a process this test started and its children (it leads its own session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers the leader left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def api(world):
    """A real Airflow api-server on the world's metadata database (the Required Actions UI
    and the HITL REST API answer approvals through it)."""
    from mammo_pipeline.common.net import wait_http

    proc = world.start("api-server", "--port", str(world.api_port), "--workers", "1", log="api.log")
    base = f"http://127.0.0.1:{world.api_port}"
    try:
        if not wait_http(f"{base}/api/v2/monitor/health", 240):
            pytest.fail(
                f"api-server did not start:\n{(world.root / 'api.log').read_text()[-3000:]}"
            )
        yield base
    finally:
        _stop_group(proc)


# ------------------------------------------------------------------ helpers
def _client(w: Env):
    import mlflow

    uri = w.settings.mlflow_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _aliases(w: Env) -> dict[str, str]:
    model = _client(w).get_registered_model(w.settings.registered_model_name)
    return {k: str(v) for k, v in model.aliases.items()}


def _tags(w: Env, version: str) -> dict[str, str]:
    return _client(w).get_model_version(w.settings.registered_model_name, version).tags


def _versions(w: Env) -> list[str]:
    found = _client(w).search_model_versions(f"name='{w.settings.registered_model_name}'")
    return sorted((str(v.version) for v in found), key=int)


def _run_count(w: Env) -> int:
    client = _client(w)
    experiment = client.get_experiment_by_name(w.settings.mlflow_experiment)
    return len(client.search_runs([experiment.experiment_id])) if experiment else 0


def _served_version(w: Env) -> str:
    url = f"http://127.0.0.1:{w.settings.serve_port}/model"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(json.loads(resp.read())["version"])


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _token(api: str, user: str) -> str:
    status, body = _http("POST", f"{api}/auth/token", {"username": user, "password": USERS[user]})
    assert status == 201, body
    return body["access_token"]


def _pending_approval(w: Env, api: str, proc: subprocess.Popen, log: str) -> str:
    """Wait (training takes minutes) until the run asks for an approval; its dag_run_id."""
    token = _token(api, "alice")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status, body = _http(
            "GET", f"{api}/api/v2/dags/mammo_retrain/dagRuns/~/hitlDetails", token=token
        )
        assert status == 200, body
        for item in body["hitl_details"]:
            ti = item["task_instance"]
            if ti["task_id"] == "await_approval" and not item.get("response_received"):
                return ti["dag_run_id"]
        if proc.poll() is not None:
            pytest.fail(f"the run ended without asking:\n{(w.root / log).read_text()[-5000:]}")
        time.sleep(3)
    pytest.fail("no approval was requested within 15 minutes")


def _answer(api: str, run_id: str, user: str, choice: str, reason: str) -> tuple[int, Any]:
    url = (
        f"{api}/api/v2/dags/mammo_retrain/dagRuns/{run_id}"
        "/taskInstances/await_approval/-1/hitlDetails"
    )
    body = {"chosen_options": [choice], "params_input": {"reason": reason}}
    return _http("PATCH", url, body, token=_token(api, user))


def _finish(w: Env, proc: subprocess.Popen, log: str) -> str:
    try:
        proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        pytest.fail(f"dags test did not finish:\n{(w.root / log).read_text()[-5000:]}")
    out = (w.root / log).read_text()
    assert proc.returncode == 0, out[-6000:]
    return out


# ------------------------------------------------------------------ the runs
def test_validate_then_retrain_deploys_a_champion(world):
    r = world.run("dags", "test", "mammo_validate_incoming")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    validated = sorted(p.name for p in world.settings.validated.glob("*.tfrecords"))
    assert len(validated) == 2 and not list(world.settings.landing.glob("*.tfrecords"))

    r = world.run("dags", "test", "mammo_retrain")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "state=success" in out
    aliases = _aliases(world)
    assert aliases.get("champion") == "1"
    tags = _tags(world, "1")
    assert tags["gate"] == "passed", tags.get("gate_reasons")
    policy = json.loads(tags["gate_policy"])  # the deployment's real thresholds
    assert policy["min_precision"] == float(TINY_RUN_SETTINGS["min_precision"]) > 0
    assert policy["min_recall"] == float(TINY_RUN_SETTINGS["min_recall"]) > 0
    assert tags.get("airflow_run_id", "").startswith("manual__")
    version = _client(world).get_model_version(world.settings.registered_model_name, "1")
    run = _client(world).get_run(version.run_id)
    assert run.data.tags["data_docs"].endswith("index.html")  # validation linked from the run
    assert run.data.metrics["test_precision"] >= policy["min_precision"]
    assert run.data.metrics["test_recall"] >= policy["min_recall"]
    assert "decision_threshold" in run.data.metrics
    # the live service answers with the champion
    url = f"http://127.0.0.1:{world.settings.serve_port}"
    assert _served_version(world) == "1"
    sample = world.root / "tile.npy"
    np.save(sample, np.load(world.settings.test_split / "synthetic_test_data.npy")[0])
    r = subprocess.run(
        [str(BIN / "mammo"), "predict", str(sample), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=world.env,
    )
    assert r.returncode == 0, r.stderr
    assert '"model_version": "1"' in r.stdout or "version 1" in r.stdout, r.stdout


def test_loosening_the_policy_fails_the_run_before_training(world):
    runs, versions = _run_count(world), _versions(world)
    r = world.run("dags", "test", "mammo_retrain", "-c", json.dumps({"min_recall": 0.0}))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "min_recall=0.0 would loosen the deployment's gate policy" in out, out[-5000:]
    assert "nothing was trained" in out
    assert _run_count(world) == runs and _versions(world) == versions  # nothing trained
    assert _aliases(world)["champion"] == "1" and _served_version(world) == "1"


def test_crippled_candidate_is_refused_and_the_champion_keeps_serving(world):
    before = _aliases(world)
    conf = {"max_records": 40, "epochs": 1, "learning_rate": 1e-6}
    r = world.run("dags", "test", "mammo_retrain", "-c", json.dumps(conf))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]  # a refused candidate is a result, not an error
    after = _aliases(world)
    assert after["champion"] == before["champion"] == "1"
    assert after["challenger"] == "2"
    tags = _tags(world, "2")
    assert tags["gate"] == "failed"
    failed = [c for c in json.loads(tags["gate_checks"]) if not c["passed"]]
    assert any("champion" in c["name"] for c in failed), failed  # worse than the champion
    assert "nothing is deployed" in out
    from mammo_pipeline.serving.deploy import read_state

    assert str(read_state(world.settings)["backend"]["version"]) == "1"
    assert _served_version(world) == "1"


def test_approval_in_airflow_goes_through_the_gate_and_records_the_approver(world, api):
    # The candidate is a retrain on the same data and settings: CPU training is deterministic,
    # so it matches v1 tile for tile and passes the paired non-regression checks.
    conf = {"require_approval": True, "min_recall": 0.75}  # tightening is accepted
    log = "approve.log"
    proc = world.start("dags", "test", "mammo_retrain", "-c", json.dumps(conf), log=log)
    try:
        run_id = _pending_approval(world, api, proc, log)
        assert _aliases(world)["challenger"] == "3" and _served_version(world) == "1"
        tags = _tags(world, "3")
        assert tags["gate"] == "passed" and tags["awaiting_approval"] == "true"
        policy = json.loads(tags["gate_policy"])
        assert policy["require_approval"] is True and policy["min_recall"] == 0.75
        status, body = _answer(api, run_id, "mallory", "Approve", "I am not an approver")
        assert status == 403, body  # not in MAMMO_APPROVERS: Airflow refuses the answer
        status, body = _answer(api, run_id, "alice", "Approve", "gate report reviewed")
        assert status == 200, body
        assert body["responded_by"]["name"] == "alice"
        out = _finish(world, proc, log)
    finally:
        _stop_group(proc)
    aliases = _aliases(world)
    assert aliases["champion"] == "3" and aliases["previous"] == "1"
    tags = _tags(world, "3")
    assert tags["gate"] == "passed" and "awaiting_approval" not in tags
    assert (tags["review"], tags["review_by"]) == ("approved", "alice")
    assert tags["review_reason"] == "gate report reviewed"
    assert "v3 approved by alice" in out
    assert _served_version(world) == "3"


def test_reject_in_airflow_records_who_and_why_and_deploys_nothing(world, api):
    log = "reject.log"
    proc = world.start(
        "dags", "test", "mammo_retrain", "-c", json.dumps({"require_approval": True}), log=log
    )
    try:
        run_id = _pending_approval(world, api, proc, log)
        assert _aliases(world)["challenger"] == "4"
        status, body = _answer(api, run_id, "bob", "Reject", "artefacts along the skin line")
        assert status == 200, body
        out = _finish(world, proc, log)
    finally:
        _stop_group(proc)
    tags = _tags(world, "4")
    assert (tags["review"], tags["review_by"]) == ("rejected", "bob")
    assert tags["review_reason"] == "artefacts along the skin line"
    assert "awaiting_approval" not in tags
    aliases = _aliases(world)
    assert aliases["champion"] == "3" and aliases.get("challenger") != "4"
    assert "version 4 rejected by bob" in out
    assert _served_version(world) == "3"


#: What a running scheduler does every few seconds: resolve Human-in-the-loop tasks whose
#: response deadline passed (with their default answer, else as a failure).
TIMEOUT_SWEEP = (
    "from airflow.jobs.job import Job\n"
    "from airflow.jobs.scheduler_job_runner import SchedulerJobRunner\n"
    "SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()\n"
)


def test_no_answer_before_the_timeout_is_a_rejection(world, api):
    log = "timeout.log"
    hours = "0.0005"  # 1.8 s: the deployment's MAMMO_APPROVAL_TIMEOUT_HOURS for this run
    proc = world.start(
        "dags", "test", "mammo_retrain", "-c", json.dumps({"require_approval": True}),
        log=log, env={"MAMMO_APPROVAL_TIMEOUT_HOURS": hours},
    )  # fmt: skip
    try:
        _pending_approval(world, api, proc, log)
        assert _aliases(world)["challenger"] == "5"
        time.sleep(3)
        r = subprocess.run(
            [sys.executable, "-c", TIMEOUT_SWEEP],
            env=world.env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=world.root,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        out = _finish(world, proc, log)
    finally:
        _stop_group(proc)
    tags = _tags(world, "5")
    assert (tags["review"], tags["review_by"]) == ("rejected", "nobody (approval timed out)")
    assert tags["review_reason"] == f"no answer within {hours} h: Reject is the default answer"
    assert _aliases(world)["champion"] == "3" and "version 5 rejected" in out
    assert _served_version(world) == "3"


def test_manual_deploy_serves_only_vetted_versions(world):
    for version, why in (("2", "is not vetted (gate=failed"), ("4", "was rejected by bob")):
        conf = {"version": int(version), "reason": "try it"}
        r = world.run("dags", "test", "mammo_deploy", "-c", json.dumps(conf))
        out = r.stdout + r.stderr
        assert r.returncode != 0, out[-3000:]
        assert f"refusing to deploy: v{version} {why}" in out, out[-5000:]
        assert _aliases(world)["champion"] == "3" and _served_version(world) == "3"
    # v1 passed the gate (now 'previous'): the triggering user's approval promotes it
    conf = {"version": 1, "reason": "back to v1 for the audit"}
    r = world.run("dags", "test", "mammo_deploy", "-c", json.dumps(conf))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert _aliases(world)["champion"] == "1"
    tags = _tags(world, "1")
    assert tags["review"] == "approved" and tags["review_by"] == "dag_test"  # `dags test`'s user
    assert tags["review_reason"].startswith("back to v1 for the audit (mammo_deploy run ")
    assert _served_version(world) == "1"


def test_invalid_params_are_refused(world):
    assert world.run("dags", "reserialize").returncode == 0
    r = world.run("dags", "trigger", "mammo_retrain", "-c", json.dumps({"epochs": -1}))
    assert r.returncode != 0
    assert "Invalid input for param epochs" in r.stdout + r.stderr
    r = world.run("dags", "trigger", "mammo_retrain", "-c", json.dumps({"learning_rate": "x"}))
    assert r.returncode != 0
