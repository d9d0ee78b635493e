"""Bounded load on the live port of a real blue/green deployment, on loopback only.

1. Registers two vetted versions of a small convnet (SYNTHETIC, random weights: the numbers
   measure serving, not the classifier) in a throw-away MLflow store and deploys v1 with
   :func:`mammo_pipeline.serving.deploy.deploy_version` (live-port proxy + ``bentoml serve``).
2. Steady load: ``--duration`` seconds (default 30) of ``POST /predict`` at concurrency 1, 8
   and 32 through the live port: requests/s, p50/p99 latency, failed requests.
3. The same load (concurrency 8) while v2 is deployed blue/green: failed requests during the
   switch (the aim is 0) and how long the switch took.
4. Peak RSS of the serving processes (backend, its workers, the proxy), sampled every 0.2 s.

``--hostile`` instead runs the hostile mode (``benchmarks/hostile.py``): concurrent maximal
bodies (with and without Content-Length) and films against one service with the default
limits, reporting the peak RSS of the serving process tree above rest and the status counts
per case, in one run.

Every loop is bounded in count and time and stops by itself; traffic goes only to 127.0.0.1.

    python benchmarks/load.py [--duration 30] [--quick] [--json OUT]
    python benchmarks/load.py --hostile [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rss import PeakRss  # noqa: E402
from benchmarks.served_model import register_served  # noqa: E402
from benchmarks.serving import build_model, load  # noqa: E402

MAX_REQUESTS = 200_000  # a hard bound on any load loop, whatever the duration


def register_vetted(settings, model, seed: int) -> str:
    """Register ``model`` as a signed, passing champion (the service refuses a bare
    ``gate=passed`` tag): :func:`benchmarks.served_model.register_served`."""
    return register_served(settings, model)


def png(size: int = 64) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per level")
    parser.add_argument("--quick", action="store_true", help="5 s per level")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--hostile", action="store_true", help="the hostile mode (bounds)")
    args = parser.parse_args(argv)
    if args.hostile:
        from benchmarks import hostile

        found = hostile.run(quick=args.quick)
        hostile.report(found)
        if args.json:
            args.json.write_text(json.dumps(found, indent=2))
        return 0
    seconds = 5.0 if args.quick else args.duration

    from mammo_pipeline.common.net import free_port
    from mammo_pipeline.config import Settings
    from mammo_pipeline.serving import deploy
    from mammo_pipeline.serving.state import read_state

    results: dict = {"data": "SYNTHETIC random convnet, 64 px", "seconds_per_level": seconds}
    with tempfile.TemporaryDirectory(prefix="mammo-load-") as tmp:
        root = Path(tmp)
        port = free_port()
        settings = Settings(
            data_dir=root / "data",
            mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
            mlflow_artifact_location=str(root / "mlartifacts"),
            serve_port=port,
            serve_side_port=0,
            api_key=secrets.token_urlsafe(32),  # authentication fails closed: as deployed
        )
        v1 = register_vetted(settings, build_model(64, 16, "convnet"), 1)
        first = deploy.deploy_version(settings)
        if not first.ok:
            print(f"deploy of v{v1} failed: {first.message}")
            return 1

        def pids() -> list[int]:
            state = read_state(settings)
            return [p for r in ("backend", "proxy") if (p := (state.get(r) or {}).get("pid"))]

        sampler = PeakRss(pids, 0.2)
        sampler.start()
        url = f"http://127.0.0.1:{port}"
        image = png()
        try:
            key = settings.api_key
            steady = [asyncio.run(load(url, image, c, seconds, key)) for c in (1, 8, 32)]
            results["steady"] = steady
            v2 = register_vetted(settings, build_model(64, 16, "convnet"), 2)
            outcome: dict = {}

            def switch() -> None:
                t0 = time.perf_counter()
                res = deploy.deploy_version(settings)
                outcome.update(ok=res.ok, message=res.message,
                               seconds=time.perf_counter() - t0)  # fmt: skip

            th = threading.Thread(target=switch)
            th.start()
            during: list[dict] = []
            while th.is_alive() and len(during) < 50:  # bounded: at most 50 windows
                during.append(asyncio.run(load(url, image, 8, min(seconds, 5.0), key)))
            th.join()
            failed = sum(int(d["errors"]) for d in during)
            served = sum(d["requests_per_s"] * min(seconds, 5.0) for d in during)
            results["switch"] = {
                "from": v1,
                "to": v2,
                "deploy_ok": outcome.get("ok"),
                "deploy_seconds": outcome.get("seconds"),
                "requests_during_switch": int(served),
                "failed_requests_during_switch": failed,
            }
        finally:
            sampler.stop()
            deploy.stop_service(settings)
        results["peak_rss_mib"] = sampler.peak / 2**20

    print(f"\nload on the live port ({results['data']}, {seconds:.0f} s per level, loopback):")
    print(f"{'concurrency':>11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in results["steady"]:
        print(f"{row['concurrency']:>11} {row['requests_per_s']:>8.1f} {row['p50_ms']:>8.1f} "
              f"{row['p99_ms']:>8.1f} {int(row['errors']):>7}")  # fmt: skip
    sw = results["switch"]
    print(
        f"blue/green switch v{sw['from']} -> v{sw['to']} under load (concurrency 8): deploy "
        f"{'ok' if sw['deploy_ok'] else 'FAILED'} in {sw['deploy_seconds']:.0f} s, "
        f"{sw['requests_during_switch']} requests, {sw['failed_requests_during_switch']} failed "
        "(aim 0)"
    )
    print(f"peak RSS of the serving processes: {results['peak_rss_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
