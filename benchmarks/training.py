"""Training throughput on SYNTHETIC tfrecords, all measured in one run.

1. Frozen-base training steps fed by the real tfrecord pipeline against the same steps on
   in-memory tensors (aim: ratio >= 0.95: the input pipeline is not the bottleneck).
2. Head training on cached VGG16 features against plain frozen-base epochs (speed-up).
GPU timings are out of scope here (no GPU lent); the model code is backend-agnostic.

    python benchmarks/training.py --image-size 64 --n 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed_epoch(fit) -> float:
    fit()  # warm-up: tracing, cache fill
    t0 = time.perf_counter()
    fit()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=512, help="synthetic training records")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import keras
    import numpy as np

    from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset
    from mammo_pipeline.data.synthetic import generate
    from mammo_pipeline.training.model import ModelSpec, build_model, feature_extractor, head_of

    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(args.image_size, "none", (256, 128), 0.5))
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(f) for f in generate(tmp, args.n, files=4, progress=False).train_files]
        opts = PipelineOptions(
            image_size=args.image_size,
            batch_size=args.batch_size,
            training=True,
            augment=False,
            cache="memory",
        )
        ds = make_dataset(files, opts)
        t_pipe = timed_epoch(lambda: model.fit(ds, epochs=1, verbose=0))
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys).astype("float32")
    t_mem = timed_epoch(lambda: model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0))
    t_feat0 = time.perf_counter()
    feats = feature_extractor(model).predict(x, batch_size=args.batch_size, verbose=0)
    t_feat = time.perf_counter() - t_feat0
    head = head_of(model)
    head.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    t_head = timed_epoch(
        lambda: head.fit(feats, y, batch_size=args.batch_size, epochs=1, verbose=0)
    )
    print(
        f"SYNTHETIC data, {args.n} records, image size {args.image_size}, "
        f"batch {args.batch_size}, {os.cpu_count()} CPU(s), backend {keras.backend.backend()}"
    )
    print(f"frozen-base epoch, tfrecord pipeline: {t_pipe:8.3f} s ({args.n / t_pipe:.1f} img/s)")
    print(f"frozen-base epoch, in-memory tensors: {t_mem:8.3f} s ({args.n / t_mem:.1f} img/s)")
    print(f"ratio pipeline/in-memory throughput = {t_mem / t_pipe:.3f}   (aim >= 0.95)")
    print(f"one-off feature extraction:           {t_feat:8.3f} s")
    print(f"head epoch on cached features:        {t_head:8.3f} s")
    print(f"speed-up per epoch (cached head vs frozen-base epoch) = {t_pipe / t_head:.1f}x")
    print(f"break-even after {t_feat / max(t_pipe - t_head, 1e-9):.2f} epochs")


if __name__ == "__main__":
    main()
