"""Serving benchmark: raw batched ``model.predict`` vs the BentoML service, in one run.

1. Registers a small convnet (input ``--size`` px, the model contract of training) in a
   throw-away MLflow store and starts ``bentoml serve`` on it (the same process and settings a
   deploy starts; requests go straight to its port, not through the live-port proxy).
2. Raw: in-process ``model.predict`` throughput on batches of ``serve_max_batch_size`` and the
   p50 latency of a single-image ``model.predict`` (and of ``predict_on_batch``).
3. Service: requests/s and p50/p99 latency of ``POST /predict`` with one PNG of the same size,
   at concurrency 1, 8 and 32 (asyncio client in this process, ``--duration`` s each).
4. Prints the ratios against the aims: service rps at concurrency 32 >= 0.85 x raw batched
   images/s; p50 at concurrency 1 <= raw single-image predict p50 + 20 ms.

The load generator shares the CPU with the server: on a small machine the ratios are a lower
bound of what a separate client machine would measure.

    python benchmarks/serving.py [--size 64] [--width 32] [--duration 6] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def build_model(size: int, width: int):
    """A small VGG-like convnet with the served model's interface."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1.0 / 255.0)(inp)
    for mult in (1, 2):
        x = keras.layers.Conv2D(width * mult, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(width * mult, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out)


def register(settings, model) -> str:
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow

    configure_mlflow(settings)
    with mlflow.start_run():
        mlflow.log_metric("decision_threshold", 0.5)
        info = mlflow.keras.log_model(
            model,
            name="model",
            metadata={"decision_threshold": 0.5, "image_size": int(model.input_shape[1])},
        )
    mv = mlflow.register_model(info.model_uri, settings.registered_model_name)
    client = mlflow.MlflowClient(
        settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    client.set_registered_model_alias(settings.registered_model_name, "champion", mv.version)
    return str(mv.version)


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
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict_on_batch(xb)
        n += batch
    on_batch_ips = n / (time.perf_counter() - start)

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
        "single_predict_p50_ms": 1000 * statistics.median(lat_predict),
        "single_predict_on_batch_p50_ms": 1000 * statistics.median(lat_on_batch),
    }


async def load(url: str, image: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        for _ in range(min(concurrency, 8)):  # warm connections and the server
            await client.post("/predict", files={"image": ("b.png", image)})
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                resp = await client.post("/predict", files={"image": ("b.png", image)})
                if resp.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * pct(latencies, 50),
        "p99_ms": 1000 * pct(latencies, 99),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="model input side (px)")
    parser.add_argument("--width", type=int, default=32, help="conv filters of the model")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    from PIL import Image

    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.common.processes import spawn
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
        )
        version = register(settings, build_model(args.size, args.width))
        port = free_port()
        log = root / "server.log"
        proc = spawn(
            backend.serve_command("127.0.0.1", port),
            env=backend.child_env(settings, version),
            log=log,
            cwd=backend.REPO_ROOT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            backend.wait_ready(url, proc.pid, 300, log)

            rng = np.random.default_rng(0)
            pixels = rng.integers(0, 256, (args.size, args.size), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            image = buf.getvalue()

            model = load_from_registry(settings, version)
            gray = decode_image(image, max_bytes=1 << 30, max_pixels=1 << 30)
            x1 = to_model_input(gray, args.size)
            raw = raw_numbers(model, x1, args.max_batch_size, args.duration)

            service = [asyncio.run(load(url, image, c, args.duration)) for c in (1, 8, 32)]
            # the machine may be shared: measure raw again and use the mean of both runs
            after = raw_numbers(model, x1, args.max_batch_size, args.duration)
            raw = {k: (raw[k] + after[k]) / 2 for k in raw} | {
                "batched_images_per_s_before_after": [raw["batched_images_per_s"],
                                                      after["batched_images_per_s"]],
            }  # fmt: skip
        finally:
            backend.stop_process(proc.pid)

    by_c = {row["concurrency"]: row for row in service}
    ratio_32 = by_c[32]["requests_per_s"] / raw["batched_images_per_s"]
    added_1 = by_c[1]["p50_ms"] - raw["single_predict_p50_ms"]
    print(f"model: {args.size}x{args.size}x1 convnet (width {args.width}), CPU cores "
          f"{os.cpu_count()}, max batch {args.max_batch_size}")  # fmt: skip
    before, after_ = raw["batched_images_per_s_before_after"]
    print(f"raw model.predict, batches of {args.max_batch_size}: "
          f"{raw['batched_images_per_s']:.1f} images/s (mean of {before:.1f} measured before "
          f"and {after_:.1f} after the service)")  # fmt: skip
    print(f"raw model.predict_on_batch, batches of {args.max_batch_size}: "
          f"{raw['batched_on_batch_images_per_s']:.1f} images/s")  # fmt: skip
    print(f"raw single-image model.predict p50: {raw['single_predict_p50_ms']:.2f} ms "
          f"(predict_on_batch {raw['single_predict_on_batch_p50_ms']:.2f} ms)")  # fmt: skip
    print(f"{'concurrency':>11} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for row in service:
        print(f"{row['concurrency']:>11} {row['requests_per_s']:>9.1f} {row['p50_ms']:>8.2f} "
              f"{row['p99_ms']:>8.2f} {row['errors']:>6}")  # fmt: skip
    print(f"ratio service rps (c=32) / raw batched images/s: {ratio_32:.3f} (aim >= 0.85)")
    strict = by_c[32]["requests_per_s"] / raw["batched_on_batch_images_per_s"]
    print(f"ratio service rps (c=32) / raw batched predict_on_batch images/s: {strict:.3f}")
    added_strict = by_c[1]["p50_ms"] - raw["single_predict_on_batch_p50_ms"]
    print(f"p50 added at c=1 over raw single predict_on_batch: {added_strict:+.2f} ms")
    print(f"p50 added at c=1 over raw single predict: {added_1:+.2f} ms (aim <= 20 ms)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "raw": raw,
                    "service": service,
                    "ratio_c32": ratio_32,
                    "ratio_c32_vs_on_batch": strict,
                    "added_p50_c1": added_1,
                    "added_p50_c1_vs_on_batch": added_strict,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
