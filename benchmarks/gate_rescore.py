"""Benchmark: what the gate's own re-scoring (registry/rescore.py) adds to a gate, measured in
one run on SYNTHETIC data.

A. The gate without re-scoring, which does not depend on the model: a real
   ``gate_and_promote`` (SQLite store in a temp folder, the evidence of ``--tiles`` held-out
   tiles read back and checked, the paired bootstrap against a champion that is also the
   baseline, the tags, the review report), on a lookup model (tests/signed_versions.py:
   Flatten -> Dense over one-hot tiles, so evaluating it costs nothing); its own re-scoring
   time, reported by the gate, is subtracted. The test-set hashing the re-scoring adds (the
   manifest digest of ``--tiles`` 299 px tiles) is timed on its own.
B. What depends on the model, for the served VGG16 at ``--size`` (random weights, the
   trained head): downloading, digesting and loading the registered model, and scoring
   ``--rescore`` tiles through the evaluation's input path (first call, which traces the
   graph, and a second call). With an accelerator visible to TensorFlow it is measured
   there; otherwise the accelerator's time is estimated from the forward FLOPs
   (benchmarks/gpu.py) at 40 % of a device's dense float32 (TF32) peak.

Prints the seconds and the ratio re-scoring / gate, and the probability that ``--rescore``
random tiles catch a forgery that changed a fraction f of the tiles (1 - (1 - f)^k).

    python benchmarks/gate_rescore.py                  # 2,000 tiles (a few minutes on a CPU)
    python benchmarks/gate_rescore.py --tiles 15000    # about the public held-out set
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from gpu import PEAK_TFLOPS, vgg16_forward_flops  # noqa: E402

from mammo_pipeline.config import Settings  # noqa: E402


def timed(fn, *args, **kw) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - start, out


def gate_without_rescoring(root: Path, n: int) -> tuple[float, float, float]:
    """(gate-and-promote seconds minus its re-scoring, its re-scoring, test-set hashing)."""
    from mammo_pipeline import registry
    from mammo_pipeline.data.manifest import build_manifest, held_out_files
    from tests.evidence_helpers import fixed_labels, scores_for
    from tests.signed_versions import evaluated_run

    s = Settings(
        data_dir=root / "data",
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "art"),
        registered_model_name="bench",
    )
    labels = fixed_labels(n, round(0.14 * n))
    versions = []
    for signal in (3.0, 3.1):
        run_id = evaluated_run(s, labels, scores_for(labels, signal), tags={"synthetic": "true"})
        versions.append(registry.register_run(s, run_id).version)
    registry.gate_and_promote(s, versions[0])  # the champion and baseline
    seconds, (decision, _) = timed(registry.gate_and_promote, s, versions[1])
    assert decision.passed, decision.reasons
    rescore = decision.statistics["evidence"]["rescore"]["seconds"]
    hashing, _ = timed(lambda: build_manifest(held_out_files(s.test_split)))
    return seconds - rescore, rescore, hashing


def vgg16_costs(root: Path, size: int, k: int) -> dict[str, float]:
    """Download + digest + load of a registered VGG16, and scoring k tiles (two calls)."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow, mlflow_client
    from mammo_pipeline.data.numpy_split import NumpySplit
    from mammo_pipeline.data.pipeline import PipelineOptions, numpy_dataset
    from mammo_pipeline.registry.attestation import registered_files_sha256
    from mammo_pipeline.training.evaluate import predict_scores
    from mammo_pipeline.training.model import ModelSpec, build_model

    s = Settings(
        data_dir=root / "data",
        mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
        mlflow_artifact_location=str(root / "art"),
        registered_model_name="bench-vgg16",
    )
    configure_mlflow(s)
    with mlflow.start_run():
        info = mlflow.keras.log_model(
            build_model(ModelSpec(image_size=size, weights="none")), name="model",
            pip_requirements=["keras"],
        )  # fmt: skip
    version = str(mlflow.register_model(info.model_uri, s.registered_model_name).version)
    mlflow_client(s)  # the store's tables exist
    out: dict[str, float] = {}
    out["download_digest_s"], _ = timed(registered_files_sha256, s, s.registered_model_name,
                                        version)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{s.registered_model_name}/{version}", dst_path=tmp
        )
        out["load_s"], model = timed(mlflow.keras.load_model, local)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(k, 299, 299, 1), dtype=np.uint8)
    split = NumpySplit("bench", Path("x"), Path("y"), images, np.zeros(k, dtype=np.int64))
    opts = PipelineOptions(image_size=size, batch_size=32)
    out["score_first_s"], _ = timed(predict_scores, model, numpy_dataset(split, opts))
    out["score_s"], _ = timed(predict_scores, model, numpy_dataset(split, opts))
    return out


def accelerator() -> str | None:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return gpus[0].name if gpus else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=2000, help="held-out tiles (<= 89,401)")
    parser.add_argument("--rescore", type=int, default=128, help="tiles re-scored (k)")
    parser.add_argument("--size", type=int, default=299, help="model input side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mammo-bench-") as tmp:
        gate_s, own_rescore_s, hash_s = gate_without_rescoring(Path(tmp) / "a", args.tiles)
        vgg = vgg16_costs(Path(tmp) / "b", args.size, args.rescore)
    device = accelerator()
    fixed = hash_s + vgg["download_digest_s"] + vgg["load_s"]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; device: "
          f"{device or 'none (CPU)'}")  # fmt: skip
    print(f"A. gate-and-promote without re-scoring, {args.tiles} tiles: {gate_s:8.2f} s "
          f"(its re-scoring of the lookup model: {own_rescore_s:.2f} s)")  # fmt: skip
    print(f"   hashing the held-out set (manifest digest):          {hash_s:8.2f} s")
    print(f"B. VGG16 {args.size} px: download + digest {vgg['download_digest_s']:.2f} s, "
          f"load {vgg['load_s']:.2f} s")  # fmt: skip
    print(
        f"   scoring {args.rescore} tiles here: first call {vgg['score_first_s']:.2f} s, "
        f"then {vgg['score_s']:.2f} s ({1000 * vgg['score_s'] / args.rescore:.1f} ms/tile)"
    )
    here = fixed + vgg["score_first_s"]
    print(f"   re-scoring here: {here:.2f} s = {100 * here / gate_s:.0f} % of the gate")
    flops = vgg16_forward_flops(args.size) * args.rescore
    for kind in ("a10", "a100", "h100"):
        estimate = flops / (0.4 * PEAK_TFLOPS[kind][1] * 1e12)
        print(f"   on an {kind.upper()} (40 % of its {PEAK_TFLOPS[kind][1]:g} TFLOP/s TF32): "
              f"scoring {1000 * estimate:.0f} ms; fixed part {fixed:.2f} s; re-scoring "
              f"{100 * (fixed + estimate) / gate_s:.1f} % of the gate")  # fmt: skip
    print(f"catch probability of {args.rescore} random tiles, forgery changing a fraction f:")
    for f in (0.003, 0.01, 0.05, 0.10, 0.50, 1.0):
        print(f"   f = {f:6.1%}: {1 - (1 - f) ** args.rescore:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
