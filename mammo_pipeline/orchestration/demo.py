"""``make demo``: the whole platform end to end on one machine, through the running Airflow.

1. starts Airflow (scheduler, dag-processor, triggerer, api-server; SQLite, LocalExecutor) and
   an MLflow UI, all with their state under ``.demo/``;
2. writes a small SYNTHETIC data set (reduced image size, random VGG16 weights: said plainly)
   and drops it into the landing directory;
3. triggers ``mammo_validate_incoming`` at once (its schedule checks the landing directory
   every ``validate_every_minutes``, default 10), which triggers ``mammo_retrain`` through the
   validated-data Asset; shows the tasks' progress until training, gate and deployment end;
4. sends a sample image to the live BentoML service and prints the gate decision, the served
   version, the prediction and the URLs of the Airflow UI, the MLflow UI and the service;
5. prints the health of Airflow's components (``GET /api/v2/monitor/health``) and the memory
   its processes hold (the sum of their resident sets, psutil).

The demo's settings are written to ``.demo/mammo.toml``; ``.demo/env`` exports
``MAMMO_CONFIG_FILE`` and the service's ``MAMMO_API_KEY`` (made once, kept private:
:mod:`.demo_access`) and puts the venv's ``mammo`` on ``PATH``: after ``source .demo/env`` every
``mammo`` command sees the demo's registry, data and service. Everything listens on 127.0.0.1
only (the Airflow UI has no login in this local mode).

``make stop`` (``python -m mammo_pipeline.orchestration.demo --stop``) stops everything it
started and lists it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mammo_pipeline.common.auth import auth_headers
from mammo_pipeline.common.environment import REPO_ROOT, settings_env
from mammo_pipeline.common.net import wait_http
from mammo_pipeline.common.processes import start, stop_all
from mammo_pipeline.config import CONFIG_FILE_ENV, Settings
from mammo_pipeline.orchestration.airflow_cli import airflow, follow, trigger, wait_for_dags
from mammo_pipeline.orchestration.airflow_env import airflow_env
from mammo_pipeline.orchestration.demo_access import api_key, key_pair, shell_usage, write_private
from mammo_pipeline.orchestration.demo_data import make_round
from mammo_pipeline.orchestration.demo_film import analyze_whole_film, say_film_figures
from mammo_pipeline.orchestration.demo_monitoring import WINDOW_S, run_monitoring_act
from mammo_pipeline.orchestration.demo_status import say_health_and_memory

DEMO_DIR = REPO_ROOT / ".demo"
STATE = DEMO_DIR / "services.json"
CONFIG_FILE = DEMO_DIR / "mammo.toml"
ENV_FILE = DEMO_DIR / "env"
KEY_FILE = DEMO_DIR / "api_key"
AIRFLOW_PORT = 8080
MLFLOW_PORT = 5000
SERVE_PORT = 3000
BIN = Path(sys.executable).parent

#: The demo's settings: small synthetic data and images so a 2-core CPU finishes in minutes.
DEMO_SETTINGS: dict[str, Any] = {
    "data_dir": str(DEMO_DIR / "data"),
    "mlflow_tracking_uri": f"sqlite:///{DEMO_DIR / 'mlflow.db'}",
    "mlflow_artifact_location": str(DEMO_DIR / "mlartifacts"),
    "airflow_home": str(DEMO_DIR / "airflow"),
    "expectations_dir": str(REPO_ROOT / "expectations"),
    "image_size": 64,
    "weights": "none",
    "epochs": 60,  # head epochs on cached features cost well under a second each
    "early_stopping_patience": 10,
    "batch_size": 32,
    "augment": False,
    "val_fraction": 0.25,
    "target_recall": 0.85,
    "min_precision": 0.30,
    "min_recall": 0.70,
    "serve_port": SERVE_PORT,
    "monitor_window_hours": WINDOW_S / 3600,  # the demo's traffic spans several windows
}
#: Task slots of the LocalExecutor: each is a worker process, and training is one task at a
#: time on 2 cores; Airflow's default (32) left 32 idle workers holding memory.
AIRFLOW_PARALLELISM = 4
#: SYNTHETIC whole films (600 x 400 px at 0.2 mm/px) evaluated after each training.
DEMO_FILMS = 20
#: SYNTHETIC training tiles (in 3 files) and held-out test tiles of a demo round.
DEMO_TRAIN_TILES = 900
DEMO_TEST_TILES = 300


def say(msg: str = "") -> None:
    print(msg, flush=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config() -> Settings:
    """``.demo/mammo.toml`` (the demo's settings) and ``.demo/env`` (for ``source``)."""
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    lines = ["# Settings of `make demo` (read by every `mammo` command via MAMMO_CONFIG_FILE)."]
    settings = {**DEMO_SETTINGS, **key_pair(DEMO_DIR / "keys")}  # signs what it gates
    lines += [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    CONFIG_FILE.write_text("\n".join(lines) + "\n")
    key = api_key(KEY_FILE)
    write_private(
        ENV_FILE,
        "# source this file to use the demo's registry, data and service from `mammo`\n"
        f"export {CONFIG_FILE_ENV}={CONFIG_FILE}\n"
        f"export MAMMO_API_KEY={key}\n"
        f'export PATH="{BIN}:$PATH"\n',
    )
    return Settings(**settings, api_key=key)


def demo_env(settings: Settings) -> dict[str, str]:
    """The environment of the demo's Airflow processes (this process's is not changed)."""
    return airflow_env(
        settings,
        api_port=AIRFLOW_PORT,
        extra={
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__PARALLELISM": str(AIRFLOW_PARALLELISM),
        },
    )


def airflow_processes(api_port: int) -> list[tuple[str, list[str]]]:
    """The demo's Airflow: name and ``airflow`` arguments of each long-running process.

    The triggerer runs deferred work (the approval's Human-in-the-loop wait); without one the
    UI shows a red "Triggerer" health badge. LocalExecutor reads task logs from local files:
    no log server (it would listen on all interfaces); the api-server binds 127.0.0.1.
    """
    return [
        ("airflow-scheduler", ["scheduler", "--skip-serve-logs"]),
        ("airflow-dag-processor", ["dag-processor"]),
        ("airflow-triggerer", ["triggerer", "--skip-serve-logs"]),
        ("airflow-api-server", ["api-server", "--host", "127.0.0.1", "--port", str(api_port)]),
    ]


def start_airflow(
    env: dict[str, str], *, state: Path = STATE, logs: Path, api_port: int = AIRFLOW_PORT
) -> None:
    """Start :func:`airflow_processes` (recorded in ``state``, so ``make stop`` stops them)."""
    for name, args in airflow_processes(api_port):
        start(state, name, [str(BIN / "airflow"), *args], env=env, log_dir=logs, cwd=REPO_ROOT)


def start_services(settings: Settings, env: dict[str, str]) -> None:
    logs = DEMO_DIR / "logs"
    say("• Airflow metadata database (SQLite) …")
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", "mammo_gpu", "1", "GPU training slots")
    start_airflow(env, logs=logs)
    start(
        STATE,
        "mlflow-ui",
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(MLFLOW_PORT),
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--default-artifact-root",
            Path(settings.mlflow_artifact_location).as_uri(),
            "--workers",
            "1",
        ],
        # the demo uses no MLflow server-side jobs: no idle job consumers
        env=settings_env(settings, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        log_dir=logs,
        cwd=REPO_ROOT,
    )
    say(f"• Airflow starting (logs in {logs}) …")
    if not wait_http(f"http://127.0.0.1:{AIRFLOW_PORT}/api/v2/monitor/health", 240):
        raise RuntimeError(f"Airflow api-server did not come up; see {logs}")


def serve_champion_if_stopped(settings: Settings, env: dict[str, str]) -> None:
    """After ``make stop``, deploy the champion through ``mammo_deploy``: this round's
    candidate may fail the gate, and then nothing else would start the service."""
    from mammo_pipeline.registry import CHAMPION
    from mammo_pipeline.registry.deployments import alias_version

    champion = alias_version(settings, CHAMPION)
    if champion is None or wait_http(f"http://127.0.0.1:{settings.serve_port}/readyz", 2):
        return
    say(f"• The champion v{champion} is not served (`make stop`): triggering mammo_deploy …")
    started = time.time()
    trigger(env, "mammo_deploy")
    follow(env, "mammo_deploy", 600, started)


def report(settings: Settings) -> bool:
    """Print the gate decision, the served version and a prediction; True if one was served."""
    import urllib.request

    import numpy as np

    from mammo_pipeline.data.provenance import write_sidecar
    from mammo_pipeline.registry import list_versions

    say("\n================ RESULT (SYNTHETIC data, random VGG16 weights) ================")
    for row in list_versions(settings):
        d = row.to_dict()
        say(f"model version {d.get('version')}: aliases={d.get('aliases')} gate={d.get('gate')}")
        for k in ("test_precision", "test_recall", "test_roc_auc", "decision_threshold"):
            if k in (d.get("metrics") or {}):
                say(f"    {k} = {d['metrics'][k]:.3f}")
        say_film_figures(settings, d.get("run_id"), say)
    say(
        f"gate thresholds: test_precision >= {settings.min_precision}, "
        f"test_recall >= {settings.min_recall}"
    )
    url = f"http://127.0.0.1:{settings.serve_port}"
    sample = DEMO_DIR / "sample_positive.npy"
    try:
        ask = urllib.request.Request(f"{url}/model", headers=auth_headers(settings.api_key))
        with urllib.request.urlopen(ask, timeout=10) as resp:
            meta = json.loads(resp.read())
        say(f"served model: {meta.get('name')} version {meta.get('version')}")
        test = sorted(settings.test_split.glob("*_data.npy"))[0]
        labels = np.load(str(test).replace("_data.npy", "_labels.npy"))
        idx = int(np.argmax(labels > 0))
        np.save(sample, np.load(test, mmap_mode="r")[idx])
        write_sidecar(sample)  # declared SYNTHETIC beside it (a .npy has no text chunk)
        out = subprocess.run(
            [str(BIN / "mammo"), "predict", str(sample), "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
            env=settings_env(settings),  # with the demo's API key
        )
        say(f"prediction for a SYNTHETIC positive tile ({sample.name}): {out.stdout.strip()}")
        served = out.returncode == 0
        analyze_whole_film(url, DEMO_DIR, say, settings_env(settings))
    except OSError as exc:
        say(f"the service at {url} did not answer: {exc}")
        served = False
    from mammo_pipeline.validation.gx_context import data_docs_dir

    docs = data_docs_dir(settings) / "index.html"
    say(f"\nAirflow UI : http://127.0.0.1:{AIRFLOW_PORT}   (local mode: no login, 127.0.0.1 only)")
    say(f"MLflow UI  : http://127.0.0.1:{MLFLOW_PORT}")
    say(f"Service    : {url}  (POST /predict, GET /model)")
    say(f"Data Docs  : {docs.as_uri() if docs.is_file() else docs}  (validation reports, offline)")
    say(f"Settings   : {CONFIG_FILE}")
    say(
        "(In the Airflow UI, mammo_retrain also shows a 'scheduled__' run that skipped every "
        "task: unpausing a DAG with a weekly schedule creates its latest scheduled run, which "
        "found no validated data yet. The asset-triggered run is the demo's.)"
    )
    say("\nUse the demo's registry, data and service from your shell:")
    for line in shell_usage(url, sample, env_file=ENV_FILE, key_file=KEY_FILE):
        say(f"    {line}")
    say("Stop everything with: make stop")
    return served


def run(n: int, test_n: int, marks: dict[str, float] | None = None) -> int:
    """The demo's round: ``n`` SYNTHETIC training records (and ``test_n`` test tiles) land,
    are validated, trained on, gated and served; 0 when a model is served. ``marks`` (if
    given) receives ``dropped``, the time the files landed (``benchmarks/landing_to_served.py
    --first-round`` times the round from it)."""
    t_start = time.time()
    settings = write_config()
    env = demo_env(settings)
    say(
        "mammo-mlops demo: SYNTHETIC data (not real mammograms), image size "
        f"{settings.image_size}px instead of 299, VGG16 with RANDOM weights (weights=none: "
        "ImageNet weights cannot be downloaded here); everything under .demo/"
    )
    for d in (settings.landing, settings.validated, settings.quarantine, settings.test_split):
        d.mkdir(parents=True, exist_ok=True)
    start_services(settings, env)
    wait_for_dags(env, ["mammo_validate_incoming", "mammo_retrain", "mammo_deploy"])
    serve_champion_if_stopped(settings, env)
    make_round(settings, DEMO_DIR, n, test_n, DEMO_FILMS, say=say)
    t_drop = time.time()
    if marks is not None:
        marks["dropped"] = t_drop
    trigger(env, "mammo_validate_incoming")
    say(
        "• Triggered mammo_validate_incoming (its schedule checks the landing directory every "
        f"{settings.validate_every_minutes} min) …"
    )
    validation = follow(env, "mammo_validate_incoming", 600, t_drop)
    if validation["task_states"].get("publish_validated") == "skipped":
        say("Nothing new passed validation, so mammo_retrain was not triggered: see the "
            f"validation report in the Airflow UI or {settings.reports}.")  # fmt: skip
        return 1
    say("• Waiting for mammo_retrain (triggered by the validated-data Asset) …")
    run_info = follow(env, "mammo_retrain", 1800, t_drop)
    say(
        f"• mammo_retrain finished: {run_info['state']} "
        f"({time.time() - t_start:.0f}s since the demo started)"
    )
    served = report(settings)
    if served:
        run_monitoring_act(settings, say=say)
    if not say_health_and_memory(settings, env, api_port=AIRFLOW_PORT, state=STATE):
        say(f"An Airflow component is not healthy: see the logs under {DEMO_DIR / 'logs'}.")
    if run_info["state"] != "success" or not served:
        say(
            "The demo did not end with a served model: see the task logs in the Airflow UI "
            f"or under {settings.airflow_home}/logs."
        )
        return 1
    return 0


def stop() -> None:
    """Stop the demo's service (backend and live-port proxy) and its Airflow and MLflow
    processes; say what was stopped."""
    stopped: list[str] = []
    try:
        from mammo_pipeline.serving.deploy import stop_service

        for role, pid in stop_service(Settings(**DEMO_SETTINGS)).items():
            stopped.append(f"model service {role} (pid {pid})")
    except Exception as exc:  # noqa: BLE001 - stopping must go on
        say(f"(model service: {exc})")
    stopped += stop_all(STATE)
    if stopped:
        say("stopped:")
        for item in stopped:
            say(f"  - {item}")
    else:
        say("nothing was running")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stop", action="store_true", help="stop what the demo started")
    p.add_argument("--n", type=int, default=DEMO_TRAIN_TILES, help="SYNTHETIC training tiles")
    p.add_argument(
        "--test-n", type=int, default=DEMO_TEST_TILES, help="SYNTHETIC held-out test tiles"
    )
    args = p.parse_args(argv)
    if args.stop:
        stop()
        return 0
    try:
        return run(args.n, args.test_n)
    except (RuntimeError, OSError) as exc:
        say(f"demo failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
