"""VGG16 training and inference throughput on an accelerator, with the model FLOPs
utilisation (MFU) against the device's peak: the GPU worker's path, measured without
TensorFlow (issue #20, item 7).

Runs wherever Keras 3 and JAX are installed (``KERAS_BACKEND=jax``, the default here): a GPU
machine with JAX and CUDA and no TensorFlow, or this project's CPU venv in ``--quick`` mode
(what ``make test`` runs). The data are SYNTHETIC tiles fed from numpy by a background thread
(no tf.data); the weights are random (``weights=None``: ImageNet weights cannot be downloaded
in this project's machines, and they do not change the arithmetic).

Measured in one run, each after warm-up steps that compile (jit):

1. training images/s of the full model with every VGG16 block trainable (fine-tuning, the
   heaviest phase), in mixed precision (``mixed_bfloat16``) unless ``--precision float32``;
2. inference images/s (``predict`` over the same feeder);
3. the host feeder alone (images/s it can prepare): the ratio feeder/training >= 1 means
   training never waits for data;
4. MFU = (3 x forward FLOPs per image x training images/s) / device peak, and forward
   FLOPs x inference images/s / peak. FLOPs are counted from the layer shapes (2 x MACs of
   the convolutions and dense layers); the peak comes from a table of known devices or
   ``--peak-tflops``.

    KERAS_BACKEND=jax python benchmarks/gpu.py                 # 299 px, batch 32
    KERAS_BACKEND=jax python benchmarks/gpu.py --quick         # tiny, CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

#: Dense peak TFLOP/s by device kind (substring of ``jax.devices()[0].device_kind``, lower
#: case): (bfloat16 tensor cores, float32 via TF32 tensor cores). Vendor datasheet figures,
#: without sparsity.
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "h200": (989.0, 494.5),
    "h100 pcie": (756.0, 378.0),
    "h100": (989.0, 494.5),
    "a100": (312.0, 156.0),
    "l40s": (362.0, 183.0),
    "l4": (121.0, 60.0),
    "a10": (125.0, 62.5),
    "v100": (125.0, 15.7),
}

#: VGG16's convolution blocks: (convolutions in the block, output channels).
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def vgg16_forward_flops(image_size: int, head_units: tuple[int, ...] | None = None) -> float:
    """Forward FLOPs of one image through the served model: the 3x3 'same' convolutions
    (2 x H x W x 9 x C_in x C_out each), max-pooling halving the side (floor), then the head's
    dense layers. Pooling, activations and normalisation are not counted (as in MFU)."""
    if head_units is None:
        from mammo_pipeline.training.model import ModelSpec

        head_units = ModelSpec().head_units
    side, c_in, flops = image_size, 3, 0.0
    for convs, c_out in VGG16_BLOCKS:
        for _ in range(convs):
            flops += 2.0 * side * side * 9 * c_in * c_out
            c_in = c_out
        side //= 2
    widths = (c_in, *head_units, 1)
    flops += sum(2.0 * a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    return flops


def device_info() -> tuple[str, str]:
    """(platform, device kind) of the first device of the Keras backend."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        dev = jax.devices()[0]
        return dev.platform, str(getattr(dev, "device_kind", dev.platform))
    return keras.backend.backend(), "unknown"


def peak_tflops(kind: str, precision: str, override: float | None) -> float | None:
    if override:
        return override
    kind = kind.lower()
    for key, (bf16, fp32) in PEAK_TFLOPS.items():
        if key in kind:
            return bf16 if precision == "bfloat16" else fp32
    return None


def synthetic_pool(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` SYNTHETIC tiles (uint8, size x size x 1) and their label_normal."""
    from PIL import Image

    from mammo_pipeline.data.synthetic import make_labels, make_tile

    labels = make_labels(n, 0.25, seed, "train")
    tiles = np.empty((n, size, size, 1), np.uint8)
    for i, lab in enumerate(labels):
        tile = make_tile(seed, "train", i, int(lab))
        if tile.shape[0] != size:
            tile = np.asarray(Image.fromarray(tile).resize((size, size), Image.BILINEAR))
        tiles[i, :, :, 0] = tile
    return tiles, (labels > 0).astype(np.float32)


class Feeder:
    """Batches of float32 images (random flips) and labels from a uint8 pool, prepared by a
    background thread into a bounded queue."""

    def __init__(self, tiles: np.ndarray, labels: np.ndarray, batch: int, seed: int,
                 depth: int = 4) -> None:  # fmt: skip
        self.tiles, self.labels, self.batch = tiles, labels, batch
        self.rng = np.random.default_rng(seed)
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def make(self) -> tuple[np.ndarray, np.ndarray]:
        idx = self.rng.integers(0, len(self.tiles), self.batch)
        x = self.tiles[idx]
        if self.rng.random() < 0.5:
            x = x[:, :, ::-1]
        if self.rng.random() < 0.5:
            x = x[:, ::-1]
        return np.ascontiguousarray(x, dtype=np.float32), self.labels[idx]

    def _run(self) -> None:
        while not self.stop.is_set():
            item = self.make()
            while not self.stop.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self.thread.is_alive():
            self.thread.start()
        while True:
            yield self.q.get()

    def close(self) -> None:
        self.stop.set()


@dataclass
class Result:
    backend: str
    platform: str
    device: str
    precision: str
    jit: bool
    image_size: int
    batch_size: int
    steps: int
    train_images_per_s: float
    train_ms_per_step: float
    infer_images_per_s: float
    feeder_images_per_s: float
    feeder_over_train: float
    forward_gflops_per_image: float
    peak_tflops: float | None
    train_mfu: float | None
    infer_mfu: float | None
    compile_s: float
    wall_s: float
    cpu_s: float
    load_average: float
    tensorflow_imported: bool
    data: str = "SYNTHETIC tiles, random weights (weights=None)"


def build(image_size: int, precision: str, jit: bool):
    import keras

    from mammo_pipeline.training.model import ModelSpec, build_model, set_trainable_blocks

    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32"
    )
    model = build_model(ModelSpec(image_size=image_size, weights="none"))
    set_trainable_blocks(model, 5)  # fine-tuning every block: the heaviest training phase
    model.compile(
        optimizer=keras.optimizers.Adam(1e-5),
        loss="binary_crossentropy",
        jit_compile=jit,
    )
    return model


def measure(args: argparse.Namespace) -> Result:
    import keras

    started, cpu0 = time.perf_counter(), time.process_time()
    platform, kind = device_info()
    tiles, labels = synthetic_pool(args.pool, args.image_size, args.seed)
    model = build(args.image_size, args.precision, args.jit)

    feeder = Feeder(tiles, labels, args.batch_size, args.seed)
    t = time.perf_counter()
    for _ in range(args.steps):
        feeder.make()
    feeder_rate = args.steps * args.batch_size / (time.perf_counter() - t)

    batches = iter(feeder)
    t = time.perf_counter()
    model.fit(batches, steps_per_epoch=args.warmup, epochs=1, shuffle=False, verbose=0)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    model.fit(batches, steps_per_epoch=args.steps, epochs=1, shuffle=False, verbose=0)
    train_s = time.perf_counter() - t

    images = ((x,) for x, _ in batches)
    model.predict(images, steps=args.warmup, verbose=0)
    t = time.perf_counter()
    model.predict(images, steps=args.steps, verbose=0)
    infer_s = time.perf_counter() - t
    feeder.close()

    n = args.steps * args.batch_size
    train_rate, infer_rate = n / train_s, n / infer_s
    fwd = vgg16_forward_flops(args.image_size)
    peak = peak_tflops(kind, args.precision, args.peak_tflops)
    return Result(
        backend=keras.backend.backend(), platform=platform, device=kind,
        precision=args.precision, jit=args.jit, image_size=args.image_size,
        batch_size=args.batch_size, steps=args.steps,
        train_images_per_s=round(train_rate, 2),
        train_ms_per_step=round(1000 * train_s / args.steps, 2),
        infer_images_per_s=round(infer_rate, 2),
        feeder_images_per_s=round(feeder_rate, 1),
        feeder_over_train=round(feeder_rate / train_rate, 2),
        forward_gflops_per_image=round(fwd / 1e9, 3),
        peak_tflops=peak,
        train_mfu=round(3 * fwd * train_rate / (peak * 1e12), 4) if peak else None,
        infer_mfu=round(fwd * infer_rate / (peak * 1e12), 4) if peak else None,
        compile_s=round(compile_s, 2),
        wall_s=round(time.perf_counter() - started, 2),
        cpu_s=round(time.process_time() - cpu0, 2),
        load_average=round(os.getloadavg()[0], 2),
        tensorflow_imported="tensorflow" in sys.modules,
    )  # fmt: skip


def report(r: Result) -> str:
    def mfu(v: float | None) -> str:
        return f"{100 * v:.1f} %" if v is not None else "n/a (peak unknown: --peak-tflops)"

    return "\n".join([
        f"VGG16 on {r.device} ({r.platform}, Keras backend {r.backend}), {r.precision}, "
        f"jit {'on' if r.jit else 'off'}, {r.image_size} px, batch {r.batch_size}, "
        f"{r.steps} timed steps; {r.data}",
        f"  training (all blocks trainable): {r.train_images_per_s:.1f} images/s "
        f"({r.train_ms_per_step:.1f} ms/step); MFU {mfu(r.train_mfu)}",
        f"  inference: {r.infer_images_per_s:.1f} images/s; MFU {mfu(r.infer_mfu)}",
        f"  host feeder alone: {r.feeder_images_per_s:.0f} images/s = "
        f"{r.feeder_over_train:.2f}x training ({'never waits for data' if r.feeder_over_train >= 1 else 'TRAINING WAITS FOR DATA'})",  # noqa: E501
        f"  forward {r.forward_gflops_per_image:.2f} GFLOP/image; peak "
        f"{r.peak_tflops if r.peak_tflops else 'unknown'} TFLOP/s; compile {r.compile_s:.1f} s",
        f"  wall {r.wall_s:.1f} s, CPU {r.cpu_s:.1f} s, load average {r.load_average:.2f}, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, "
        f"TensorFlow imported: {'yes' if r.tensorflow_imported else 'no'}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    # before Keras is first imported (never at import time: a test imports this module)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps that compile first")
    parser.add_argument("--pool", type=int, default=64, help="distinct synthetic tiles")
    parser.add_argument("--precision", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--no-jit", dest="jit", action="store_false")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="also write the result here")
    parser.add_argument("--quick", action="store_true",
                        help="32 px, batch 4, 2 timed steps: a CPU check of the path")  # fmt: skip
    parser.add_argument("--allow-cpu", action="store_true",
                        help="full size even without an accelerator (hours)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.quick and not args.allow_cpu and device_info()[0] == "cpu":
        print("no accelerator found: running --quick (a check of the path, not a GPU figure)")
        args.quick = True
    if args.quick:
        args.image_size, args.batch_size, args.steps, args.warmup, args.pool = 32, 4, 2, 1, 8
    result = measure(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(result), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
