"""Input pipeline benchmark on SYNTHETIC tfrecords, all measured in one run.

(a) raw record iteration of ``tf.data.TFRecordDataset`` over the same files (one record per
Python step), and (a') the same read in batches of the pipeline's batch size (no per-record
Python step: the stricter limit); (b) the training pipeline's rate without and with
augmentation; (c) a VGG16 training step (all layers trainable) on this machine at the same
image size. Prints (b)/(a) and (b)/(a') (aims: >= 0.5 at 64 px, >= 0.8 at 299 px, where the
pipeline does not resize) and (b)/(c) (aim >= 20), with the load average and CPU time.

    python benchmarks/input_pipeline.py --image-size 64 --n 1024
    python benchmarks/input_pipeline.py --image-size 299 --n 1024 --skip-step
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rates(makers: dict, n_items: int, repeats: int = 5) -> dict[str, float]:
    """Items per second of each maker's iterable: the best of ``repeats`` full passes, the
    makers taking turns pass by pass (after one warm-up pass each), so that a machine whose
    load changes during the run slows them all alike."""
    for make_iter in makers.values():
        for _ in make_iter():
            pass
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(repeats):
        for name, make_iter in makers.items():
            t0 = time.perf_counter()
            for _ in make_iter():
                pass
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n_items / t for name, t in best.items()}


def vgg_step_rate(image_size: int, batch: int, steps: int = 3) -> float:
    import keras
    import numpy as np

    from mammo_pipeline.training.model import ModelSpec, build_model, set_trainable_blocks

    model = build_model(ModelSpec(image_size, "none", (256, 128), 0.5))
    set_trainable_blocks(model, 5)
    model.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (batch, image_size, image_size, 1))
    y = np.zeros((batch, 1), "float32")
    model.train_on_batch(x.astype("float32"), y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x.astype("float32"), y)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=512, help="synthetic training records")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-step", action="store_true", help="skip (c), the VGG16 step")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each, in turn")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    cpu_before = time.process_time()

    import tensorflow as tf

    from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset
    from mammo_pipeline.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(f) for f in generate(tmp, args.n, files=4, progress=False).train_files]
        paths = [str(f) for f in files]
        opts = dict(
            image_size=args.image_size,
            batch_size=args.batch_size,
            training=True,
            cache="none",
            shuffle_buffer=256,
        )
        measured = rates(
            {
                "raw": lambda: tf.data.TFRecordDataset(paths),
                "raw_batched": lambda: tf.data.TFRecordDataset(paths).batch(args.batch_size),
                "plain": lambda: make_dataset(files, PipelineOptions(**opts, augment=False)),
                "aug": lambda: make_dataset(files, PipelineOptions(**opts, augment=True)),
            },
            args.n,
            args.repeats,
        )
        raw, raw_batched = measured["raw"], measured["raw_batched"]
        plain, aug = measured["plain"], measured["aug"]
    step = None if args.skip_step else vgg_step_rate(args.image_size, args.batch_size)
    print(
        f"SYNTHETIC data, {args.n} records, image size {args.image_size}, {os.cpu_count()} CPU(s); "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{time.process_time() - cpu_before:.1f} s CPU"
    )
    print(f"(a) raw TFRecordDataset:         {raw:10.1f} records/s")
    print(f"(a') raw, batches of {args.batch_size}:       {raw_batched:10.1f} records/s")
    print(f"(b) pipeline, no augmentation:   {plain:10.1f} images/s")
    print(f"(b') pipeline, augmentation:     {aug:10.1f} images/s")
    aim = 0.8 if args.image_size == 299 else 0.5
    print(f"ratio (b)/(a)  = {plain / raw:.3f}   (aim >= {aim})")
    print(f"ratio (b)/(a') = {plain / raw_batched:.3f}   (aim >= {aim})")
    print(f"ratio (b')/(a) = {aug / raw:.3f}")
    print(f"ratio (b')/(a') = {aug / raw_batched:.3f}")
    if step is not None:
        print(f"(c) VGG16 training step:         {step:10.1f} images/s")
        print(f"ratio (b)/(c)  = {plain / step:.1f}   (aim >= 20)")
        print(f"ratio (b')/(c) = {aug / step:.1f}")


if __name__ == "__main__":
    main()
