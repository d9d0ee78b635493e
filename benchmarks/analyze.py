"""Whole-mammogram analysis benchmark on a SYNTHETIC film: ``analyze()`` vs the bare model.

For each model input size (VGG16 with random weights, the served architecture):

1. raw: ``model.predict_on_batch`` over the SAME tiles ``analyze()`` scores, already cut,
   resized and stacked in memory (the true limit: only the model runs);
2. ``analyze()`` end to end on the film (resampling, breast mask, lazy tiling, resize,
   model, aggregation): its latency and tiles/s;
3. the ratio analyze tiles/s / raw tiles/s (aim >= 0.8), and the heatmap render time.

Raw passes and ``analyze()`` runs are interleaved ``--repeats`` times and the median pair
ratio is printed (the machine may be shared); the same ratio in tiles per CPU-second of this
process is printed too, as it depends less on what else runs on the machine.
VGG16 at 299 px runs a few tiles/s on 2 CPU cores: the 299-px run of a 3000 x 2000 film takes
minutes per pass; ``--quick`` uses a 1500 x 1000 film and one pair.

``--service`` sends the film to ``POST /analyze`` of a real ``bentoml serve`` instead (same
model registered and served as deployed, API key on): ``--repeats`` interleaved pairs of a raw
pass over the same tiles and one request (aim: /analyze >= 0.85 x raw, issue #20), with the
service's CPU time per film; ``--quick`` keeps the repeats there.

    python benchmarks/analyze.py [--sizes 64,299] [--repeats 3] [--quick] [--service]
                                 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.served_model import register_served  # noqa: E402


def build(image_size: int):
    try:
        from mammo_pipeline.training.model import ModelSpec, build_model
    except ImportError:  # before the training package existed
        from mammo_pipeline.model import ModelSpec, build_model
    import keras

    keras.utils.set_random_seed(0)
    return build_model(ModelSpec(image_size, "none", (256, 128), 0.5))


def prepared_tiles(pixels: np.ndarray, image_size: int, batch_size: int) -> np.ndarray:
    """Every tile ``analyze()`` scores, as the model input, all in memory (raw baseline)."""
    from mammo_pipeline.analysis.tiling import iter_tile_batches, plan_tiles
    from mammo_pipeline.data.preprocess import prepare_image
    from mammo_pipeline.imaging.preprocess import prepare_film

    plan = plan_tiles(prepare_film(pixels, spacing_mm=0.1))
    batches = [
        np.asarray(prepare_image(tiles, image_size), dtype=np.float32)
        for _, tiles in iter_tile_batches(plan, batch_size)
    ]
    return np.concatenate(batches)


def timed(fn) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def raw_pass(model, x: np.ndarray, batch_size: int) -> None:
    for start in range(0, len(x), batch_size):
        model.predict_on_batch(x[start : start + batch_size])


def run_size(image_size: int, film, args) -> dict[str, float]:
    from mammo_pipeline.analysis import analyze, render_heatmap

    model = build(image_size)
    x = prepared_tiles(film.pixels, image_size, args.batch_size)
    raw_pass(model, x, args.batch_size)  # warm-up: traces every batch shape once

    def predict(batch: np.ndarray) -> np.ndarray:
        return model.predict_on_batch(batch)[:, 0]

    def run_analyze():
        return analyze(
            film.pixels,
            predict_batch=predict,
            image_size=image_size,
            threshold=0.5,
            pixel_spacing_mm=film.mm_per_px,
            spacing_source="form",
            batch_size=args.batch_size,
        )

    pairs = []  # (raw wall, raw cpu, analyze wall, analyze cpu), interleaved
    for _ in range(args.repeats):
        _, raw_wall, raw_cpu = timed(lambda: raw_pass(model, x, args.batch_size))
        result, an_wall, an_cpu = timed(run_analyze)
        pairs.append((raw_wall, raw_cpu, an_wall, an_cpu))
    _, heatmap_s, _ = timed(
        lambda: render_heatmap(
            film.pixels, result, caption=f"VGG16 {image_size} px, weights none", synthetic=True
        )
    )
    raw_wall, raw_cpu, an_wall, an_cpu = (
        statistics.median(col) for col in zip(*pairs, strict=True)
    )
    n = result.tiles_scored
    return {
        "image_size": image_size,
        "tiles": n,
        "raw_tiles": len(x),  # the same windows, so equal to "tiles"
        "windows": result.windows_total,
        "repeats": args.repeats,
        "raw_tiles_per_s": len(x) / raw_wall,
        "analyze_tiles_per_s": n / an_wall,
        "analyze_latency_s": an_wall,
        "ratio": statistics.median(p[0] / p[2] for p in pairs),
        "ratio_cpu": sum(p[1] for p in pairs) / sum(p[3] for p in pairs),
        "raw_tiles_per_cpu_s": len(x) / raw_cpu,
        "analyze_tiles_per_cpu_s": n / an_cpu,
        "heatmap_s": heatmap_s,
        "pairs": pairs,
    }


def run_service(image_size: int, film, args) -> dict[str, float]:
    """The same film through ``POST /analyze`` of a real ``bentoml serve`` (loopback, with an
    API key as deployed), against raw ``predict_on_batch`` of the same registered model on the
    same tiles in this process: ``--repeats`` interleaved (raw pass, request) pairs after one
    warm-up of each, median pair ratio; the service's CPU time per film (all its processes)
    against the raw pass's CPU time."""
    import io
    import secrets
    import tempfile

    import httpx
    from PIL import Image

    from mammo_pipeline.common.auth import auth_headers
    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.config import Settings
    from mammo_pipeline.serving import backend

    with tempfile.TemporaryDirectory(prefix="mammo-analyze-bench-") as tmp:
        root = Path(tmp)
        s = Settings(
            data_dir=root / "data",
            mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
            mlflow_artifact_location=str(root / "art"),
            serve_max_batch_size=args.batch_size,
            api_key=secrets.token_urlsafe(32),
        )
        model = build(image_size)
        register_served(s, model)
        x = prepared_tiles(film.pixels, image_size, args.batch_size)
        raw_pass(model, x, args.batch_size)  # warm-up: traces every batch shape once
        port = free_port()
        pid, log = backend.start_backend(s, None, port, log=root / "server.log")
        try:
            url = f"http://127.0.0.1:{port}"
            backend.wait_ready(url, pid, 600, log)
            buf = io.BytesIO()
            Image.fromarray(film.pixels).save(buf, format="PNG")
            body = {"image": ("film.png", buf.getvalue(), "image/png")}
            form = {"pixel_spacing_mm": str(film.mm_per_px)}
            pairs = []  # (raw wall, raw cpu, service wall, service cpu)
            with httpx.Client(base_url=url, timeout=1800, headers=auth_headers(s.api_key)) as http:

                def request() -> dict:
                    resp = http.post("/analyze", files=body, data=form)
                    if resp.status_code != 200:
                        raise SystemExit(f"/analyze answered {resp.status_code}: {resp.text}")
                    return resp.json()

                request()  # warm-up
                for _ in range(args.repeats):
                    _, raw_wall, raw_cpu = timed(lambda: raw_pass(model, x, args.batch_size))
                    cpu0 = server_cpu_s(pid)
                    answer, latency, _ = timed(request)
                    pairs.append((raw_wall, raw_cpu, latency, server_cpu_s(pid) - cpu0))
        finally:
            backend.stop_process(pid)
    n = int(answer["tiles_scored"])
    raw_wall, raw_cpu, latency, srv_cpu = (
        statistics.median(col) for col in zip(*pairs, strict=True)
    )
    return {
        "image_size": image_size,
        "tiles": n,
        "raw_tiles": len(x),
        "repeats": args.repeats,
        "service_latency_s": latency,
        "service_tiles_per_s": n / latency,
        "raw_tiles_per_s": len(x) / raw_wall,
        "ratio": statistics.median((n / p[2]) / (len(x) / p[0]) for p in pairs),
        "service_cpu_s_per_film": srv_cpu,
        "raw_cpu_s_per_pass": raw_cpu,
        "ratio_cpu": statistics.median((n / p[3]) / (len(x) / p[1]) for p in pairs),
        "pairs": pairs,
    }


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its descendants so far."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # ended meanwhile
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,299", help="model input sizes, comma-separated")
    parser.add_argument("--quick", action="store_true", help="1500x1000 film, one raw pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved raw/analyze pairs (median)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--service", action="store_true", help="through POST /analyze of a real bentoml serve"
    )
    args = parser.parse_args(argv)

    from mammo_pipeline.data.synthetic_film import make_film

    height, width = (1500, 1000) if args.quick else (3000, 2000)
    if args.quick and not args.service:
        args.repeats = 1
    film = make_film(height, width, lesion="mass", seed=0, mm_per_px=0.1)
    if args.service:
        rows = [run_service(int(s), film, args) for s in args.sizes.split(",")]
        print(f"SYNTHETIC film {width}x{height} px at 0.1 mm/px through POST /analyze "
              f"(loopback, {os.cpu_count()} CPU core(s), VGG16 weights none); load average "
              f"(1/5/15 min) at the end {'/'.join(f'{v:.2f}' for v in os.getloadavg())}, CPU "
              f"time of this process {time.process_time():.0f} s")  # fmt: skip
        for r in rows:
            print(f"input {r['image_size']:>3} px: {r['tiles']} tiles (raw: {r['raw_tiles']}), "
                  f"median of {r['repeats']} interleaved pairs | /analyze "
                  f"{r['service_tiles_per_s']:.2f} tiles/s, raw predict_on_batch "
                  f"{r['raw_tiles_per_s']:.2f} tiles/s | ratio {r['ratio']:.3f} (aim >= 0.85) | "
                  f"end-to-end latency {r['service_latency_s']:.1f} s")  # fmt: skip
            print(f"    CPU per film: service (all its processes) {r['service_cpu_s_per_film']:.2f}"
                  f" s, raw pass {r['raw_cpu_s_per_pass']:.2f} s | ratio of tiles per CPU-second "
                  f"{r['ratio_cpu']:.3f}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"film": [height, width], "service": rows}, indent=2))
        return 0
    rows = [run_size(int(s), film, args) for s in args.sizes.split(",")]

    print(f"SYNTHETIC film {width}x{height} px at 0.1 mm/px ({film.describe()}), "
          f"{os.cpu_count()} CPU core(s), batch {args.batch_size}, VGG16 weights none")  # fmt: skip
    for r in rows:
        print(f"input {r['image_size']:>3} px: {r['tiles']} tiles of {r['windows']} windows "
              f"(raw: {r['raw_tiles']}), median of {r['repeats']} interleaved pairs")  # fmt: skip
        print(f"    raw predict_on_batch {r['raw_tiles_per_s']:8.2f} tiles/s | analyze() "
              f"{r['analyze_tiles_per_s']:8.2f} tiles/s | ratio {r['ratio']:.3f} "
              "(aim >= 0.8)")  # fmt: skip
        print(f"    per CPU-second: raw {r['raw_tiles_per_cpu_s']:.2f}, analyze() "
              f"{r['analyze_tiles_per_cpu_s']:.2f} tiles | ratio {r['ratio_cpu']:.3f} "
              "(less sensitive to other load on the machine)")  # fmt: skip
        print(f"    end-to-end latency of the film {r['analyze_latency_s']:.2f} s | heatmap "
              f"{r['heatmap_s']:.2f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"film": [height, width], "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
