"""Input pipeline benchmark on SYNTHETIC tfrecords, all measured in one run.

(a) raw record iteration of ``tf.data.TFRecordDataset``; (b) the training pipeline's rate
without and with augmentation; (c) a VGG16 training step (all layers trainable) on this
machine at the same image size. Prints (b)/(a) (aim >= 0.5) and (b)/(c) (aim >= 20).

    python benchmarks/input_pipeline.py --image-size 64 --n 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rate(make_iter, n_items: int, repeats: int = 2) -> float:
    """Items per second of the best of ``repeats`` full passes (after one warm-up pass)."""
    for _ in make_iter():
        pass
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in make_iter():
            pass
        best = min(best, time.perf_counter() - t0)
    return n_items / best


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
    args = parser.parse_args()

    import tensorflow as tf

    from mammo_pipeline.data.pipeline import PipelineOptions, make_dataset
    from mammo_pipeline.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(f) for f in generate(tmp, args.n, files=4, progress=False).train_files]
        raw = rate(lambda: tf.data.TFRecordDataset([str(f) for f in files]), args.n)
        opts = dict(
            image_size=args.image_size,
            batch_size=args.batch_size,
            training=True,
            cache="none",
            shuffle_buffer=256,
        )
        plain = rate(lambda: make_dataset(files, PipelineOptions(**opts, augment=False)), args.n)
        aug = rate(lambda: make_dataset(files, PipelineOptions(**opts, augment=True)), args.n)
    step = vgg_step_rate(args.image_size, args.batch_size)
    print(
        f"SYNTHETIC data, {args.n} records, image size {args.image_size}, {os.cpu_count()} CPU(s)"
    )
    print(f"(a) raw TFRecordDataset:         {raw:10.1f} records/s")
    print(f"(b) pipeline, no augmentation:   {plain:10.1f} images/s")
    print(f"(b') pipeline, augmentation:     {aug:10.1f} images/s")
    print(f"(c) VGG16 training step:         {step:10.1f} images/s")
    print(f"ratio (b)/(a)  = {plain / raw:.3f}   (aim >= 0.5)")
    print(f"ratio (b')/(a) = {aug / raw:.3f}")
    print(f"ratio (b)/(c)  = {plain / step:.1f}   (aim >= 20)")
    print(f"ratio (b')/(c) = {aug / step:.1f}")


if __name__ == "__main__":
    main()
