"""Benchmark: the deploy's start-up phase, the in-process smoke prediction overlapped with the
green backend's start-up (what ``deploy_version`` does) vs. after it (the baseline), in the same
run, alternating, on VGG16 with RANDOM weights (``weights=none``) at ``--size`` px.

Each round is a fresh process, as the deploy task of an Airflow run is (TensorFlow not yet
imported): it starts a real ``bentoml serve`` backend on a side port of a temporary SQLite
MLflow store, waits for ``/readyz``, and has the in-process probability of the same version
(:func:`mammo_pipeline.serving.smoke.expected_probability`: a registry download and a Keras
load): in ``sequential`` after ``/readyz``, in ``overlapped`` on a thread started with the
backend (:func:`~mammo_pipeline.serving.smoke.expected_in_background`). Then the backend is
stopped. It prints each round's wall seconds (the whole process), the medians, their ratio, the
CPU time of the rounds' processes and the load average. No data set is involved: the smoke
image is a fixed gradient.

    .venv/bin/python benchmarks/deploy.py [--rounds 3] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.served_model import register_served  # noqa: E402
from benchmarks.serving import build_model  # noqa: E402


def one_round(settings, version: str, overlapped: bool) -> None:
    """Start the backend, have both /readyz and the in-process score, stop it."""
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.serving import backend
    from mammo_pipeline.serving.smoke import (
        expected_in_background,
        expected_probability,
        smoke_image,
    )

    port = free_port()
    pid, log = backend.start_backend(settings, version, port)
    try:
        pending = expected_in_background(settings, version) if overlapped else None
        backend.wait_ready(f"http://127.0.0.1:{port}", pid, 300, log)
        if pending is None:
            expected_probability(settings, version, smoke_image())
        else:
            pending.result()
    finally:
        backend.stop_process(pid)


def _settings(root: Path):
    from mammo_pipeline.config import Settings

    return Settings(
        data_dir=root / "data",
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "mlartifacts"),
        auth="none",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant")
    parser.add_argument("--size", type=int, default=64, help="model input size (px)")
    parser.add_argument("--_round", nargs=3, metavar=("ROOT", "VERSION", "VARIANT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args._round:
        root, version, variant = args._round
        one_round(_settings(Path(root)), version, variant == "overlapped")
        return 0

    with tempfile.TemporaryDirectory(prefix="mammo-bench-deploy-") as tmp:
        root = Path(tmp)
        version = register_served(_settings(root), build_model(args.size, 16))
        print(f"VGG16 with RANDOM weights at {args.size} px, registry v{version}; "
              f"load average {os.getloadavg()[0]:.2f} before")  # fmt: skip
        times: dict[str, list[float]] = {"sequential": [], "overlapped": []}
        for i in range(args.rounds):
            for name in (("sequential", "overlapped") if i % 2 == 0 else
                         ("overlapped", "sequential")):  # fmt: skip
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, __file__, "--_round", str(root), version, name],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                seconds = time.perf_counter() - start  # fmt: skip
                times[name].append(seconds)
                print(f"  round {i + 1} {name:<10}: {seconds:6.2f} s", flush=True)
        seq, ovl = (statistics.median(times[k]) for k in ("sequential", "overlapped"))
        print(f"start-up to ready and scored, median of {args.rounds}: sequential {seq:.2f} s, "
              f"overlapped {ovl:.2f} s (saves {seq - ovl:.2f} s)")  # fmt: skip
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"CPU time of the rounds' processes: {cpu.ru_utime + cpu.ru_stime:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f} after")  # fmt: skip
        print(f"RATIO overlapped / sequential = {ovl / seq:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
