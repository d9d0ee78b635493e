"""The demo's SYNTHETIC data, one round per ``make demo``.

The first round writes the held-out test split, the film set and three training files (seed
2026). Each later round (``make demo`` run again on the same ``.demo/``) keeps the test split
and the films, which must stay fixed for versions to be compared, and drops three NEW training
files made with another seed under new names: the validator decides files by their bytes, so a
second round with the first round's files would be skipped as already validated, nothing would
be published and no retraining would follow. A new round trains a new version on all validated
data, which the gate then compares with the champion.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mammo_pipeline.config import Settings

#: Seed of the first round; round k uses FIRST_SEED + k.
FIRST_SEED = 2026
ROUNDS_FILE = "demo_rounds"


@dataclass(frozen=True)
class DemoRound:
    """What one round dropped: its number (0 = first), the landing files, whether it wrote
    the held-out test split and film set (only the first round does)."""

    number: int
    landing_files: tuple[Path, ...]
    wrote_test_split: bool


def _has_test_split(settings: Settings) -> bool:
    return any(settings.test_split.glob("*_data.npy"))


def next_round(demo_dir: Path) -> int:
    """How many rounds of data earlier demos dropped into this ``.demo/``."""
    try:
        return int((demo_dir / ROUNDS_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def make_round(
    settings: Settings, demo_dir: Path, n: int, test_n: int, films: int, say=print
) -> DemoRound:
    """Generate the next round's SYNTHETIC data and drop its training files into landing
    (each with one atomic rename: the validator never sees a half-written file)."""
    from mammo_pipeline.data.synthetic import generate

    first = not _has_test_split(settings)
    # a .demo/ from before rounds were counted holds round 1's data: never reuse its seed
    number = next_round(demo_dir) if first else max(next_round(demo_dir), 1)
    staging = demo_dir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    if first:
        say(f"• Generating SYNTHETIC data: {n} training tiles in 3 files + {test_n} test tiles")
    else:
        say(
            f"• Generating SYNTHETIC data, round {number + 1}: {n} NEW training tiles in 3 files "
            f"(seed {FIRST_SEED + number}); the held-out test split and films are kept"
        )
    ds = generate(staging, n, files=3, positive_fraction=0.25, seed=FIRST_SEED + number,
                  test_n=test_n if first else 0, films=films if first else 0,
                  films_dir=settings.film_test_split)  # fmt: skip
    if first:
        say(f"• SYNTHETIC film set for film-level evaluation: {films} films in "
            f"{settings.film_test_split}")  # fmt: skip
        settings.test_split.mkdir(parents=True, exist_ok=True)
        for p in (ds.test_data, ds.test_labels):
            if p is not None:
                os.replace(p, settings.test_split / Path(p).name)
    settings.landing.mkdir(parents=True, exist_ok=True)
    prefix = "" if number == 0 else f"round{number + 1}_"
    dropped = []
    for f in ds.train_files:
        target = settings.landing / f"{prefix}{Path(f).name}"
        os.replace(f, target)
        dropped.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    (demo_dir / ROUNDS_FILE).write_text(f"{number + 1}\n")
    say(f"• Dropped {len(dropped)} SYNTHETIC tfrecord files into {settings.landing}")
    return DemoRound(number, tuple(dropped), first)
