"""What whole-film answers are worth: film-level figures of a model trained on SYNTHETIC tiles.

Not a speed benchmark: it measures what ``/analyze`` answers, the way every training run does
(``training/film_eval.py``: the model through ``analysis.analyze`` on each film of a film set),
so the figure can be compared across code changes in one command:

- a model is trained at 64 px on SYNTHETIC tiles from ``data.synthetic.generate`` only (no
  tile cut from a film): ``--model tiny`` is the tests' small CNN (it normalises each tile),
  ``--model vgg16`` the platform's VGG16 with random weights (``weights=none``, this machine
  cannot download ImageNet) and its head fitted on the pooled features, as the demo does;
- a SYNTHETIC film set (``data.film_set.make_film_set``: planted masses and calcification
  clusters with known boxes, 0.2 mm/px, 30 % validation films) is analysed;
- it prints the tile ROC AUC (validation tiles), film ROC AUC with its 95 % interval, FROC
  sensitivity at 1 false positive per film, the top-1 hit rate, and how many test films are
  called positive at the TILE threshold (what ``/analyze`` applied before the film threshold)
  and at the FILM threshold (now), with n.

``--rule before`` analyses with the window rule of before #17 (grid from 0, windows from 25 %
breast) to measure what it changed; the README's film-level section has both.

Run: ``.venv/bin/python benchmarks/film_answers.py [--model tiny|vgg16] [--films 40]
[--rule before]`` (about a minute on 2 CPU cores). Everything here is SYNTHETIC.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 64


def synthetic_tiles(work: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    from mammo_pipeline.data.example_codec import decode_tile
    from mammo_pipeline.data.preprocess import prepare_image
    from mammo_pipeline.data.synthetic import generate
    from mammo_pipeline.data.tfrecord_io import iter_records

    ds = generate(work / "tiles", n, files=2, positive_fraction=0.3, seed=11, progress=False)
    images, labels = [], []
    for path in ds.train_files:
        for raw in iter_records(path):
            tile = decode_tile(raw)
            images.append(tile.pixels())
            labels.append(tile.label_normal)
    x = np.asarray(prepare_image(np.stack(images)[..., np.newaxis], SIZE))
    return x, np.asarray(labels, dtype="float32")


def train(kind: str, x: np.ndarray, y: np.ndarray):
    """(model, tile threshold, validation tile ROC AUC)."""
    import keras
    from sklearn.metrics import roc_auc_score

    from mammo_pipeline.training.evaluate import choose_threshold

    keras.utils.set_random_seed(0)
    order = np.random.default_rng(0).permutation(len(y))
    val, fit = order[: len(y) // 4], order[len(y) // 4 :]
    if kind == "tiny":
        from tests.test_analysis import _tiny_cnn

        model = _tiny_cnn(SIZE)
        model.fit(x[fit], y[fit], epochs=15, batch_size=32, verbose=0, shuffle=True)
        scores = model.predict(x[val], verbose=0)[:, 0]
    else:
        from mammo_pipeline.training.model import (
            ModelSpec,
            build_model,
            feature_extractor,
            head_of,
        )

        model = build_model(ModelSpec(image_size=SIZE, weights="none", head_units=(32, 16)))
        features = feature_extractor(model).predict(x, verbose=0)
        head = head_of(model)
        head.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
        head.fit(features[fit], y[fit], epochs=60, batch_size=32, verbose=0)
        scores = head.predict(features[val], verbose=0)[:, 0]
    return model, choose_threshold(y[val], scores, 0.85), float(roc_auc_score(y[val], scores))


def use_old_window_rule() -> None:
    """Make ``analysis.analyze`` (as film evaluation calls it) use the window rule of before
    #17: ``benchmarks/coverage_bias.py``'s old grid and 25 % breast. Benchmark only."""
    import functools

    import mammo_pipeline.analysis as analysis
    import mammo_pipeline.analysis.tiling as tiling

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from coverage_bias import OLD_MIN_BREAST_FRACTION, old_starts

    tiling.window_starts = old_starts
    analysis.analyze = functools.partial(
        analysis.analyze, min_breast_fraction=OLD_MIN_BREAST_FRACTION
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "vgg16"), default="tiny")
    parser.add_argument("--films", type=int, default=40)
    parser.add_argument("--tiles", type=int, default=800)
    parser.add_argument(
        "--rule", choices=("after", "before"), default="after",
        help="before: the window rule /analyze had before #17 (grid from 0 with the last "
        "window pushed to the far edge, windows from 25 %% breast), to measure the change",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rule == "before":
        use_old_window_rule()

    from mammo_pipeline.config import Settings
    from mammo_pipeline.data.film_set import make_film_set
    from mammo_pipeline.training.film_eval import film_evaluation

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="film-answers-") as tmp:
        work = Path(tmp)
        x, y = synthetic_tiles(work, args.tiles)
        model, tile_threshold, tile_auc = train(args.model, x, y)
        make_film_set(work / "films", args.films, seed=2024)
        settings = Settings(data_dir=work, film_test_dir=work / "films", target_recall=0.85)
        result = film_evaluation(
            model, settings, tile_threshold, work / "eval", synthetic=True,
            weights=f"{args.model} trained here (random init)", progress=False,
        )  # fmt: skip
        assert result is not None and result.predictions is not None
        test = result.predictions.subset("test")
        m = result.metrics
        at_tile = int((test.scores >= tile_threshold).sum())
        at_film = int((test.scores >= result.threshold).sum())
        n, pos = len(test), int(test.labels.sum())
        print(f"SYNTHETIC data; model {args.model} at {SIZE} px, random initial weights; "
              f"window rule: {args.rule}")  # fmt: skip
        print(f"tiles: {len(y)} ({int(y.sum())} positive), validation tile ROC AUC {tile_auc:.3f}")
        print(f"test films: {n} ({pos} with a lesion, {n - pos} without)")
        print(f"film ROC AUC {m['film_roc_auc']:.3f} "
              f"[{m['film_roc_auc_low']:.3f}, {m['film_roc_auc_high']:.3f}]")  # fmt: skip
        froc, top1 = m["film_froc_sens_at_1fp"], m["film_top1_hit_rate"]
        print(f"FROC sensitivity at 1 FP/film {froc:.3f}, top-1 hit rate {top1:.3f} "
              f"({pos} films with a lesion)")  # fmt: skip
        print(f"films called positive: {at_tile}/{n} at the tile threshold "
              f"{tile_threshold:.3f}, {at_film}/{n} at the film threshold "
              f"{result.threshold:.3f} ({result.method})")  # fmt: skip
        print(f"film sensitivity {m['film_sensitivity']:.3f}, specificity "
              f"{m['film_specificity']:.3f} at the film threshold")  # fmt: skip
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
