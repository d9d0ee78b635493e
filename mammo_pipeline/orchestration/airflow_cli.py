"""Driving a running Airflow through its command line (the demo's view of the DAG runs):
run commands, parse their JSON, wait for DAGs to be parsed, trigger a DAG, follow a run's
task states, count runs, and read the api-server's health of each component."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def say(msg: str = "") -> None:
    print(msg, flush=True)


def airflow(env: dict[str, str], *args: str, check: bool = True) -> str:
    r = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=300
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def _json_list(out: str) -> list[dict]:
    """The JSON list in an Airflow CLI's output, which also carries log lines and warnings."""
    decoder = json.JSONDecoder()
    for line_start in [0] + [i + 1 for i, ch in enumerate(out) if ch == "\n"]:
        if out.startswith("[", line_start):
            try:
                value, _ = decoder.raw_decode(out[line_start:])
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                return value
    return []


def wait_for_dags(env: dict[str, str], dag_ids: list[str], timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = _json_list(airflow(env, "dags", "list", "-o", "json", check=False))
        found = {d.get("dag_id") for d in listed}
        if set(dag_ids) <= found:
            for d in dag_ids:
                airflow(env, "dags", "unpause", d)
            return
        time.sleep(5)
    raise RuntimeError(f"DAGs {dag_ids} were not parsed within {timeout:.0f}s")


def _runs(env: dict[str, str], dag_id: str) -> list[dict]:
    return _json_list(airflow(env, "dags", "list-runs", dag_id, "-o", "json", check=False))


def run_count(env: dict[str, str], dag_id: str) -> int:
    """How many runs of ``dag_id`` the metadata database holds."""
    return len(_runs(env, dag_id))


def trigger(env: dict[str, str], dag_id: str) -> None:
    """Start a run of ``dag_id`` now (a manual run), whatever its schedule."""
    airflow(env, "dags", "trigger", dag_id)


def health(api_port: int, timeout: float = 10) -> dict[str, str]:
    """Each component's status from the api-server's ``GET /api/v2/monitor/health``
    (``metadatabase``, ``scheduler``, ``triggerer``, ``dag_processor``: ``healthy``,
    ``unhealthy`` or ``none`` when it never reported); ``{"api-server": "<error>"}`` when
    the api-server does not answer."""
    import urllib.request

    url = f"http://127.0.0.1:{api_port}/api/v2/monitor/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        return {"api-server": f"no answer ({exc})"}
    return {
        name: str((part or {}).get("status") or "none")
        for name, part in body.items()
        if isinstance(part, dict) or part is None
    }


def _task_states(env: dict[str, str], dag_id: str, run_id: str) -> dict[str, str]:
    out = airflow(env, "tasks", "states-for-dag-run", dag_id, run_id, "-o", "json", check=False)
    return {t.get("task_id"): t.get("state") or "none" for t in _json_list(out)}


def _started_after(run: dict, after: float) -> bool:
    from datetime import datetime

    started = run.get("start_date")
    return bool(started) and datetime.fromisoformat(started).timestamp() >= after


def follow(env: dict[str, str], dag_id: str, timeout: float, after: float) -> dict:
    """Wait for the first run of ``dag_id`` that started after ``after``; print task states.
    Returns the run (Airflow's JSON) with ``task_states`` (task id -> final state)."""
    deadline = time.time() + timeout
    shown: dict[str, str] = {}
    t0 = time.time()
    while time.time() < deadline:
        runs = [r for r in _runs(env, dag_id) if _started_after(r, after) and r.get("state")]
        run = min(runs, key=lambda r: r["start_date"]) if runs else None
        if run:
            states = _task_states(env, dag_id, run["run_id"])
            for task, state in states.items():
                if shown.get(task) != state and state not in ("none", "scheduled"):
                    say(f"  [{time.time() - t0:6.0f}s] {dag_id}.{task}: {state}")
                    shown[task] = state
            if run["state"] in ("success", "failed"):
                return {**run, "task_states": states}
        time.sleep(8)
    raise RuntimeError(f"{dag_id} did not finish within {timeout:.0f}s")
