"""Landing-to-served time through the real scheduler (issue #20, item 6): a new SYNTHETIC
tfrecord file is dropped into the demo's landing folder, and the clock runs until the model
trained on it answers on the live port.

It needs the demo running (``make demo`` leaves Airflow, MLflow and the service up; or pass
``--start`` to run the demo first). Then, as an operator's new file would:

1. the current served version is read from ``GET /model``;
2. a new SYNTHETIC file of ``--n`` records is written aside and renamed into ``landing/``
   (the clock starts); ``mammo_validate_incoming`` is triggered at once, as the demo does
   (its schedule would add up to ``validate_every_minutes``: stated, not measured);
3. the validation run, the ``mammo_retrain`` run its Asset triggers, and the live port are
   followed until ``/model`` names a new version (the clock stops);
4. each stage's share comes from Airflow's task instances and the training run's logged
   ``epoch_seconds`` / ``feature_cache_seconds`` (:mod:`mammo_pipeline.orchestration.timeline`).

The baseline is the model's own work (training epochs): the platform's overhead is everything
else (aim: at most 60 s at demo size). The figure for the 55,890 public tiles is extrapolated:
validation scaled by records, the other stages held (they do not grow with the landing file).
If the gate refuses the new candidate, the run is reported up to the gate, and exits 2.

The gate compares a retrained candidate with the champion, and on the demo's 300 test tiles
and 14 test films it often cannot show the candidate is not worse: the run then ends at the
gate decision and nothing new is served (exit 2). ``--first-round`` times the path to a served
model where there is no champion to beat: it stops the demo, removes ``.demo/`` and times
``make demo``'s own first round (900 records in 3 files) from the drop to the end of the deploy
task, which returns only once ``GET /model`` on the live port names the new version.

    make demo && .venv/bin/python benchmarks/landing_to_served.py [--n 300]
    .venv/bin/python benchmarks/landing_to_served.py --first-round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

PUBLIC_TILES = 55_890


def served_version(url: str, key: str | None) -> str | None:
    from mammo_pipeline.common.auth import auth_headers

    try:
        ask = urllib.request.Request(f"{url}/model", headers=auth_headers(key))
        with urllib.request.urlopen(ask, timeout=5) as resp:
            return str(json.loads(resp.read()).get("version"))
    except OSError:
        return None


def training_compute_s(settings, airflow_run_id: str) -> float:
    """Epoch and feature-caching seconds the training run logged (0 if none)."""
    from mammo_pipeline.common.mlflow_access import mlflow_client

    client = mlflow_client(settings)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.airflow_run_id = '{airflow_run_id}'",
    )
    total = 0.0
    for run in runs:
        total += sum(m.value for m in client.get_metric_history(run.info.run_id, "epoch_seconds"))
        total += run.data.metrics.get("feature_cache_seconds", 0.0)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="SYNTHETIC records in the new file")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--start", action="store_true", help="run the demo first")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--first-round",
        action="store_true",
        help="restart the demo from nothing and time its first round (no champion to beat)",
    )
    args = parser.parse_args(argv)

    from mammo_pipeline.data.synthetic import generate
    from mammo_pipeline.orchestration import demo
    from mammo_pipeline.orchestration.airflow_cli import follow, trigger

    if args.first_round:
        return first_round()
    if args.start and demo.run(demo.DEMO_TRAIN_TILES, demo.DEMO_TEST_TILES) != 0:
        print("the demo did not end with a served model")
        return 1
    settings = demo.write_config()
    env = demo.demo_env(settings)
    url = f"http://127.0.0.1:{settings.serve_port}"
    before = served_version(url, settings.api_key)
    if before is None:  # `make bench` runs every benchmark: this one needs the demo
        print(f"skipped: no model answers on {url}; run `make demo` first (or pass --start)")
        return 0
    print(f"served before: v{before}; SYNTHETIC data, random VGG16 weights, demo settings "
          f"({settings.image_size} px); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip

    staging = demo.DEMO_DIR / "staging-bench"
    shutil.rmtree(staging, ignore_errors=True)
    ds = generate(staging, args.n, files=1, positive_fraction=0.25, seed=args.seed, test_n=0)
    target = settings.landing / f"bench_{args.seed}_{Path(ds.train_files[0]).name}"
    cpu0 = time.process_time()
    dropped = time.time()
    os.replace(ds.train_files[0], target)  # the clock starts: the file has landed
    trigger(env, "mammo_validate_incoming")
    val_run = follow(env, "mammo_validate_incoming", 600, dropped - 1)
    ret_run = follow(env, "mammo_retrain", args.timeout, dropped - 1)
    served_at, after = time.time(), before
    if ret_run["state"] == "success":
        deadline = time.time() + 120
        while time.time() < deadline:
            after = served_version(url, settings.api_key)
            if after not in (None, before):
                served_at = time.time()
                break
            time.sleep(0.2)
    served = after not in (None, before)
    report(settings, env, dropped, val_run, ret_run, served, served_at, args.n, cpu0)
    shutil.rmtree(staging, ignore_errors=True)
    if not served:
        print(f"no new version was served: mammo_retrain {ret_run['state']} (a refused gate "
              "ends here; see `mammo registry list`)")  # fmt: skip
        return 2
    print(f"served after: v{after}")
    return 0


def first_round() -> int:
    """The demo's first round, timed: the demo is stopped, its folder removed, and ``make
    demo``'s own run drops its files (``demo.DEMO_TRAIN_TILES`` records) into an empty
    platform; the clock runs from the drop to the end of the deploy task, which returns only
    once ``GET /model`` on the live port names the new version."""
    from mammo_pipeline.orchestration import demo
    from mammo_pipeline.orchestration.airflow_cli import follow
    from mammo_pipeline.orchestration.timeline import spans

    demo.stop()
    shutil.rmtree(demo.DEMO_DIR, ignore_errors=True)
    marks: dict[str, float] = {}
    cpu0 = time.process_time()
    code = demo.run(demo.DEMO_TRAIN_TILES, demo.DEMO_TEST_TILES, marks=marks)
    settings = demo.write_config()
    env = demo.demo_env(settings)
    print(f"\nfirst round: no champion to beat; SYNTHETIC data, random VGG16 weights, demo "
          f"settings ({settings.image_size} px); {os.cpu_count()} CPUs")  # fmt: skip
    val_run = follow(env, "mammo_validate_incoming", 60, marks["dropped"] - 1)
    ret_run = follow(env, "mammo_retrain", 60, marks["dropped"] - 1)
    deploys = [s for s in spans(_instances(env, "mammo_retrain", ret_run)) if s.task_id == "deploy"]
    served = code == 0 and ret_run["state"] == "success" and bool(deploys)
    served_at = deploys[0].end if deploys else time.time()
    report(settings, env, marks["dropped"], val_run, ret_run, served, served_at,
           demo.DEMO_TRAIN_TILES, cpu0)  # fmt: skip
    return 0 if served else 2


def _instances(env: dict[str, str], dag_id: str, run: dict) -> list[dict]:
    from mammo_pipeline.orchestration.airflow_cli import airflow

    out = airflow(env, "tasks", "states-for-dag-run", dag_id, run["run_id"], "-o", "json")
    return json.loads(out[out.index("[") :])


def report(settings, env, dropped: float, val_run: dict, ret_run: dict, served: bool,
           served_at: float, n: int, cpu0: float) -> None:  # fmt: skip
    """Print each stage's share, the aim and the extrapolation."""
    from mammo_pipeline.orchestration.timeline import render, spans, timeline

    compute = training_compute_s(settings, ret_run["run_id"])
    retraining = _instances(env, "mammo_retrain", ret_run)
    if not served:  # the clock stops at the run's last task, not at the end of polling
        served_at = max((s.end for s in spans(retraining)), default=served_at)
    t = timeline(dropped, _instances(env, "mammo_validate_incoming", val_run), retraining,
                 served_at, compute)  # fmt: skip
    print("\n".join(render(t, n, until="served" if served else "gate decision (nothing served)")))
    validation_rate = n / t.stages["validation"] if t.stages["validation"] else 0.0
    extrapolated = t.overhead_s + t.stages["validation"] * (PUBLIC_TILES / n - 1)
    print(f"  validation: {validation_rate:.0f} records/s end to end in Airflow")
    print(f"  aim: platform overhead <= 60 s at demo size: {t.overhead_s:.1f} s "
          f"({'met' if t.overhead_s <= 60 else 'NOT met'})")  # fmt: skip
    print(f"  extrapolated to the {PUBLIC_TILES:,} public tiles (validation scaled by records, "
          f"other stages held; no epochs): {extrapolated:.0f} s overhead, an upper bound: the "
          "validation stage's fixed start-up (two task processes) is scaled with it")  # fmt: skip
    print(f"  plus up to {settings.validate_every_minutes} min of schedule wait in production "
          "(the validation DAG's interval; triggered at once here, as in the demo)")  # fmt: skip
    print(f"  this process: CPU {time.process_time() - cpu0:.1f} s (Airflow's processes not "
          f"counted); load average {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
