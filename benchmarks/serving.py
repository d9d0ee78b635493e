"""Serving benchmark: raw batched ``model.predict`` vs the BentoML service, in one run.

1. Registers the served architecture (``--model vgg16``, the default: the platform's VGG16 with
   random weights, input ``--size`` px; ``--model convnet`` a small convnet whose speed
   exposes the service's own overhead) in a throw-away MLflow store and starts
   ``bentoml serve`` on it (the same process and settings a deploy starts; requests go
   straight to its port, not through the live-port proxy).
   A second service on the same model runs with ``MAMMO_MONITOR_LOG_PREDICTIONS=false``
   (``log-off``; ``--no-logging-off`` skips it): the cost of the prediction log (issue #21)
   is measured in the same run, on the same inputs and concurrencies.
   With ``--compare REV`` the service of another git revision (``REV:serving/service.py``,
   e.g. the one before a change, or an alternative kept in the history) is started too, on
   the same model, so that both are measured in the same run on the same machine.
2. Raw: in-process ``model.predict`` throughput on batches of ``serve_max_batch_size`` and the
   p50 latency of a single-image ``model.predict`` (and of ``predict_on_batch``), measured
   before and after the services (the mean is used: the machine may be shared).
3. Service: requests/s and p50/p99 latency of ``POST /predict`` with one PNG of the same size,
   at concurrency 1, 8 and 32 (asyncio client in this process, ``--duration`` s each), for
   ``--rounds`` rounds; within a round every service is measured at one concurrency before
   the next, in alternating order, so that a change in the machine's load hits both alike.
4. Prints the ratios against the aims (issue #20): service rps at concurrency 32 >= 0.85 x
   raw ``predict_on_batch`` images/s at the service's batch size (the true limit: the very
   model served, on already-decoded inputs); p50 at concurrency 1 <= raw single-image
   ``predict_on_batch`` p50 + 5 ms; with ``--compare``, current / other per concurrency; the
   cost of logging: images/s with logging on / off at c=32, the p50 difference at c=1 and
   the services' CPU time per answer (all their processes: less sensitive than wall time to
   other load on the machine), and the records the log wrote; and the load average and this
   process's CPU time.

The load generator shares the CPU with the server: on a small machine the ratios are a lower
bound of what a separate client machine would measure. The model has random weights and the
pixels are random (SYNTHETIC): the numbers measure serving, not the classifier.

    python benchmarks/serving.py [--model vgg16] [--size 64] [--duration 6] [--rounds 2]
                                 [--no-logging-off] [--compare REV] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.served_model import register_served  # noqa: E402


def build_model(size: int, width: int, kind: str = "vgg16"):
    """The served VGG16 (random weights), or a small VGG-like convnet with its interface."""
    import keras

    keras.utils.set_random_seed(0)
    if kind == "vgg16":
        from mammo_pipeline.training.model import ModelSpec
        from mammo_pipeline.training.model import build_model as build_vgg16

        return build_vgg16(ModelSpec(image_size=size, weights="none"))
    inp = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1.0 / 255.0)(inp)
    for mult in (1, 2):
        x = keras.layers.Conv2D(width * mult, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(width * mult, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def raw_numbers(model, x1: np.ndarray, batch: int, seconds: float) -> dict[str, float]:
    xb = np.repeat(x1[np.newaxis], batch, axis=0)
    model.predict(xb, batch_size=batch, verbose=0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(xb, batch_size=batch, verbose=0)
        n += batch
    batched_ips = n / (time.perf_counter() - start)
    model.predict_on_batch(xb)
    n, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        model.predict_on_batch(xb)
        n += batch
    on_batch_ips = n / (time.perf_counter() - start)
    on_batch_cpu_ms = 1000 * (time.process_time() - cpu0) / n

    single = x1[np.newaxis]
    lat_predict, lat_on_batch = [], []
    for _ in range(5):
        model.predict(single, verbose=0)
        model.predict_on_batch(single)
    for _ in range(40):
        t0 = time.perf_counter()
        model.predict(single, verbose=0)
        lat_predict.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.predict_on_batch(single)
        lat_on_batch.append(time.perf_counter() - t0)
    return {
        "batched_images_per_s": batched_ips,
        "batched_on_batch_images_per_s": on_batch_ips,
        "batched_on_batch_cpu_ms_per_image": on_batch_cpu_ms,
        "single_predict_p50_ms": 1000 * statistics.median(lat_predict),
        "single_predict_on_batch_p50_ms": 1000 * statistics.median(lat_on_batch),
    }


async def load(
    url: str,
    image: bytes,
    concurrency: int,
    seconds: float,
    key: str | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> dict[str, float]:
    """Requests/s, p50, p99 and errors of ``concurrency`` clients posting ``image`` to
    ``/predict`` for ``seconds`` (:mod:`benchmarks.lean_http`: the request bytes are built
    once); the client's own (this process's) CPU milliseconds per answer over the timed part,
    and with ``server_cpu`` (the server's CPU seconds so far) the server's."""
    from urllib.parse import urlsplit

    from benchmarks.lean_http import multipart_post, post_loop
    from mammo_pipeline.common.auth import auth_headers

    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", int(where.port or 80)
    request = multipart_post(host, port, "/predict", "image", "b.png", image, auth_headers(key))
    start: dict[str, float] = {}

    def started() -> None:
        start["server"] = server_cpu() if server_cpu else float("nan")
        start["client"] = time.process_time()

    done = await post_loop(host, port, request, concurrency, seconds, on_start=started)
    client_cpu = time.process_time() - start["client"]
    cpu = server_cpu() - start["server"] if server_cpu else float("nan")
    answers = max(len(done.latencies), 1)
    return {
        "concurrency": concurrency,
        "answers": len(done.latencies),
        "server_cpu_ms_per_answer": 1000 * cpu / answers,
        "client_cpu_ms_per_answer": 1000 * client_cpu / answers,
        "requests_per_s": len(done.latencies) / done.elapsed_s,
        "p50_ms": 1000 * pct(done.latencies, 50),
        "p99_ms": 1000 * pct(done.latencies, 99),
        "errors": done.errors,
    }


CONCURRENCY = (1, 8, 32)
CURRENT = "current"
LOG_OFF = "log-off"


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and all its descendants so far."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a process that ended meanwhile
            pass
    return total


def logged_records(settings) -> int:
    """Rows in the embedded prediction log (0 when it was never created)."""
    import sqlite3

    path = settings.data_dir / "monitoring" / "predictions.sqlite"
    if not path.exists():
        return 0
    from mammo_pipeline.monitoring.store import RECORDS_TABLE

    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {RECORDS_TABLE}").fetchone()[0])


def service_of_revision(rev: str, root: Path, repo: Path) -> tuple[str, Path]:
    """``serving/service.py`` of git revision ``rev`` as a module in ``root``: (target, cwd)."""
    try:
        text = subprocess.run(
            ["git", "show", f"{rev}:serving/service.py"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--compare {rev}: {exc.stderr.strip()}") from None
    cwd = root / "other"
    cwd.mkdir()
    (cwd / "mammo_other_service.py").write_text(text)
    return "mammo_other_service:MammoClassifier", cwd


def start_service(name: str, target: str, cwd: Path, env: dict[str, str], root: Path):
    """``bentoml serve target`` on a free port with its own BentoML home: (proc, url, log)."""
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.common.processes import spawn
    from mammo_pipeline.serving import backend

    port = free_port()
    log = root / f"server-{name}.log"
    # its own BENTOML_HOME: two `bentoml serve` sharing one would share (and wipe) the
    # Prometheus multiprocess directory
    env = env | {"BENTOML_HOME": str(root / f"bentoml-{name}")}
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = spawn(cmd, env=env, log=log, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        backend.wait_ready(url, proc.pid, 300, log)
    except Exception:
        backend.stop_process(proc.pid)
        raise
    return proc, url, log


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean over rounds of one service at one concurrency (errors summed)."""
    keys = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_answer",
            "client_cpu_ms_per_answer")  # fmt: skip
    out = {k: statistics.fmean(r[k] for r in rows) for k in keys}
    return {
        "concurrency": rows[0]["concurrency"],
        **out,
        "errors": sum(r["errors"] for r in rows),
        "answers": sum(r["answers"] for r in rows),
        "rounds": len(rows),
    }


def record_cost(settings, x1: np.ndarray, data_dir: Path, n: int = 2000) -> dict[str, float]:
    """In this process: wall and CPU microseconds per ``PredictionMonitor.record`` of the
    served input ``x1`` (what the service calls for each answer), with logging on and off.
    The CPU time includes the log's writer thread (the queue is flushed before it is read):
    the whole cost of a record, which the request's wall time alone does not show."""
    from mammo_pipeline.serving.prediction_log import PredictionMonitor

    out: dict[str, float] = {}
    side = int(x1.shape[0])
    for enabled in (True, False):
        s = settings.model_copy(update={"data_dir": data_dir, "monitor_log_predictions": enabled})
        monitor = PredictionMonitor(s, s.registered_model_name, "1")

        def one(m: PredictionMonitor = monitor) -> None:
            m.record("predict", score=0.3, threshold=0.5, latency_ms=5.0, model_input=x1,
                     width=side, height=side)  # fmt: skip

        for _ in range(100):  # warm: the writer thread, the store's tables
            one()
        monitor.log.flush(timeout=60)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            one()
        wall = time.perf_counter() - wall
        monitor.log.flush(timeout=60)
        cpu = time.process_time() - cpu
        monitor.close()
        key = "on" if enabled else "off"
        out[f"call_wall_us_{key}"] = 1e6 * wall / n
        out[f"cpu_us_{key}"] = 1e6 * cpu / n
    return out


def logging_cost(
    on: list[dict[str, float]],
    off: list[dict[str, float]],
    records: int,
    per_record: dict[str, float],
) -> dict[str, float]:
    """Print and return the cost of the prediction log: logging on (``current``) against
    ``MAMMO_MONITOR_LOG_PREDICTIONS=false`` (``log-off``), same model, inputs, concurrency."""
    on_c = {row["concurrency"]: row for row in on}
    off_c = {row["concurrency"]: row for row in off}
    ratio = on_c[32]["requests_per_s"] / off_c[32]["requests_per_s"]
    p50 = on_c[1]["p50_ms"] - off_c[1]["p50_ms"]
    cpu = {c: on_c[c]["server_cpu_ms_per_answer"] - off_c[c]["server_cpu_ms_per_answer"]
           for c in on_c}  # fmt: skip
    answered = sum(row["answers"] for row in on)
    cpu_per_answer = off_c[32]["server_cpu_ms_per_answer"]
    added_cpu = (per_record["cpu_us_on"] - per_record["cpu_us_off"]) / 1000
    print(
        f"[logging] images/s at c=32, logging on / off: {ratio:.3f} (aim >= 0.97); p50 at c=1 "
        f"on - off: {p50:+.2f} ms (aim <= +1 ms); server CPU per answer on - off: "
        + ", ".join(f"c={c} {v:+.2f} ms" for c, v in cpu.items())
    )
    print(
        f"[logging] records in the prediction log: {records} (logging-on service: {answered} "
        "timed answers plus warm-up; logging-off service: none expected)"
    )
    print(
        "[logging] PredictionMonitor.record in-process, per record (CPU includes the writer "
        f"thread): logging on {per_record['cpu_us_on']:.0f} us CPU "
        f"({per_record['call_wall_us_on']:.0f} us in the caller), off "
        f"{per_record['cpu_us_off']:.0f} us CPU ({per_record['call_wall_us_off']:.0f} us); "
        f"logging adds {added_cpu:.3f} ms CPU per answer = {added_cpu / cpu_per_answer:.2%} of "
        f"the logging-off service's {cpu_per_answer:.2f} ms CPU per answer at c=32"
    )
    return {
        "rps_ratio_c32": ratio,
        "p50_added_c1_ms": p50,
        "server_cpu_ms_added": cpu,
        "records_logged": records,
        "answers_logging_on": answered,
        "record_in_process": per_record,
        "record_cpu_share_of_answer_c32": added_cpu / cpu_per_answer,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="model input side (px)")
    parser.add_argument("--model", choices=["vgg16", "convnet"], default="vgg16")
    parser.add_argument("--width", type=int, default=32, help="conv filters of --model convnet")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per service")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument(
        "--logging-off",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also serve with MAMMO_MONITOR_LOG_PREDICTIONS=false (the cost of logging)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="REV",
        help="also serve REV:serving/service.py (a git revision) and compare",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    from PIL import Image

    from mammo_pipeline.config import Settings
    from mammo_pipeline.serving import backend
    from mammo_pipeline.serving.image_io import decode_image, to_model_input
    from mammo_pipeline.serving.model_loader import load_from_registry

    with tempfile.TemporaryDirectory(prefix="mammo-bench-") as tmp:
        root = Path(tmp)
        settings = Settings(
            data_dir=root / "data",
            mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
            mlflow_artifact_location=str(root / "mlartifacts"),
            serve_max_batch_size=args.max_batch_size,
            api_key=secrets.token_urlsafe(32),  # measured as deployed: the key is checked
        )
        cpu0 = time.process_time()
        load0 = os.getloadavg()
        version = register_served(settings, build_model(args.size, args.width, args.model))
        env = backend.child_env(settings, version)
        targets = {CURRENT: (backend.SERVICE_TARGET, backend.REPO_ROOT, env)}
        if args.logging_off:
            off = env | {"MAMMO_MONITOR_LOG_PREDICTIONS": "false"}
            targets[LOG_OFF] = (backend.SERVICE_TARGET, backend.REPO_ROOT, off)
        if args.compare:
            other = service_of_revision(args.compare, root, backend.REPO_ROOT)
            targets[args.compare] = (*other, env)
        procs = {}
        try:
            urls = {}
            for name, (target, cwd, env_) in targets.items():  # one after the other: all import
                label = name if name in (CURRENT, LOG_OFF) else "other"
                procs[name], urls[name], _ = start_service(label, target, cwd, env_, root)

            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 256, (args.size, args.size), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            image = buf.getvalue()

            model = load_from_registry(settings, version)
            gray = decode_image(image, max_bytes=1 << 30, max_pixels=1 << 30)
            x1 = to_model_input(gray, args.size)
            raw = raw_numbers(model, x1, args.max_batch_size, args.duration)

            measured: dict[str, dict[int, list[dict[str, float]]]] = {
                name: {c: [] for c in CONCURRENCY} for name in urls
            }
            order = list(urls)
            for r in range(args.rounds):
                for c in CONCURRENCY:
                    for name in order if r % 2 == 0 else order[::-1]:
                        key = settings.api_key
                        cpu = functools.partial(tree_cpu_s, procs[name].pid)
                        row = asyncio.run(load(urls[name], image, c, args.duration, key, cpu))
                        measured[name][c].append(row)
            # the machine may be shared: measure raw again and use the mean of both runs
            after = raw_numbers(model, x1, args.max_batch_size, args.duration)
            raw = {k: (raw[k] + after[k]) / 2 for k in raw} | {
                "batched_images_per_s_before_after": [
                    raw["batched_images_per_s"],
                    after["batched_images_per_s"],
                ],
            }
        finally:
            for proc in procs.values():
                backend.stop_process(proc.pid)
        records_logged = logged_records(settings)
        per_record = record_cost(settings, x1, root / "record-cost") if args.logging_off else {}

    services = {name: [summarise(rows[c]) for c in CONCURRENCY] for name, rows in measured.items()}
    what = "VGG16, random weights" if args.model == "vgg16" else f"convnet width {args.width}"
    print(
        f"SYNTHETIC pixels, {what}, {args.size}x{args.size}x1; "
        f"CPU cores {os.cpu_count()}, load average (1/5/15 min) at the start "
        f"{'/'.join(f'{v:.2f}' for v in load0)}, at the end "
        f"{'/'.join(f'{v:.2f}' for v in os.getloadavg())}, CPU time of this "
        f"process {time.process_time() - cpu0:.0f} s, max batch {args.max_batch_size}, "
        f"{args.rounds} round(s) of {args.duration:g}s per service and concurrency"
    )
    before, after_ = raw["batched_images_per_s_before_after"]
    print(
        f"raw model.predict, batches of {args.max_batch_size}: "
        f"{raw['batched_images_per_s']:.1f} images/s (mean of {before:.1f} measured before "
        f"and {after_:.1f} after the service)"
    )
    print(
        f"raw model.predict_on_batch, batches of {args.max_batch_size}: "
        f"{raw['batched_on_batch_images_per_s']:.1f} images/s, "
        f"{raw['batched_on_batch_cpu_ms_per_image']:.2f} ms CPU per image"
    )
    print(
        f"raw single-image model.predict p50: {raw['single_predict_p50_ms']:.2f} ms "
        f"(predict_on_batch {raw['single_predict_on_batch_p50_ms']:.2f} ms)"
    )
    width = max(len(n) for n in services)
    print(
        f"{'service':<{width}} {'concurrency':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'server CPU ms/answer':>20} {'client CPU ms/answer':>20}"
    )
    for c_index in range(len(CONCURRENCY)):
        for name, rows in services.items():
            row = rows[c_index]
            print(
                f"{name:<{width}} {row['concurrency']:>11} {row['requests_per_s']:>9.1f} "
                f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['errors']:>6} "
                f"{row['server_cpu_ms_per_answer']:>20.2f} {row['client_cpu_ms_per_answer']:>20.2f}"
            )
    result: dict[str, object] = {
        "raw": raw,
        "services": services,
        "args": vars(args) | {"json": str(args.json) if args.json else None},
    }
    for name, rows in services.items():
        by_c = {row["concurrency"]: row for row in rows}
        ratio_32 = by_c[32]["requests_per_s"] / raw["batched_images_per_s"]
        strict = by_c[32]["requests_per_s"] / raw["batched_on_batch_images_per_s"]
        added_1 = by_c[1]["p50_ms"] - raw["single_predict_p50_ms"]
        added_strict = by_c[1]["p50_ms"] - raw["single_predict_on_batch_p50_ms"]
        print(
            f"[{name}] service rps (c=32) / raw predict_on_batch images/s: {strict:.3f} "
            f"(aim >= 0.85); / raw model.predict: {ratio_32:.3f}"
        )
        cpu_ratio = raw["batched_on_batch_cpu_ms_per_image"] / by_c[32]["server_cpu_ms_per_answer"]
        print(
            f"[{name}] c=32 CPU per answer: server {by_c[32]['server_cpu_ms_per_answer']:.2f} ms, "
            f"load generator {by_c[32]['client_cpu_ms_per_answer']:.2f} ms; raw predict_on_batch "
            f"CPU per image / server CPU per answer: {cpu_ratio:.3f}"
        )
        print(
            f"[{name}] p50 added at c=1 over raw single-image predict_on_batch: "
            f"{added_strict:+.2f} ms (aim <= +5 ms); over model.predict: {added_1:+.2f} ms"
        )
        result[name] = {
            "ratio_c32": ratio_32,
            "ratio_c32_vs_on_batch": strict,
            "added_p50_c1": added_1,
            "added_p50_c1_vs_on_batch": added_strict,
            "cpu_ratio_c32": cpu_ratio,
        }
    if args.logging_off:
        result["logging"] = logging_cost(
            services[CURRENT], services[LOG_OFF], records_logged, per_record
        )
    if args.compare:
        cmp = []
        for cur, old in zip(services[CURRENT], services[args.compare], strict=True):
            cmp.append(
                {
                    "concurrency": cur["concurrency"],
                    "rps_ratio": cur["requests_per_s"] / old["requests_per_s"],
                    "p50_ratio": cur["p50_ms"] / old["p50_ms"],
                    "p99_ratio": cur["p99_ms"] / old["p99_ms"],
                }
            )
            last = cmp[-1]
            print(
                f"current / {args.compare} at c={cur['concurrency']}: "
                f"req/s x{last['rps_ratio']:.2f}, p50 x{last['p50_ratio']:.2f}, "
                f"p99 x{last['p99_ratio']:.2f}"
            )
        result["current_vs_other"] = cmp
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
