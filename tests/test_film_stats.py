"""Film-level statistics (mammo_pipeline.stats.film) on hand-computed cases."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from mammo_pipeline.stats.film import (
    FilmCandidates,
    compare_films,
    film_roc_auc,
    froc_curve,
    froc_metric_name,
    froc_sensitivity,
    hit_rates,
    summarize,
)
from mammo_pipeline.stats.inputs import StatsInputError


def four_films() -> FilmCandidates:
    """A, B with one lesion each; C, D without. False-positive regions by score:
    0.7 (C), 0.6 (B), 0.5 (A), 0.3 (C), 0.2 (D); lesion detection scores 0.9 (A), 0.4 (B)."""
    regions = [
        [(0.9, True), (0.5, False)],
        [(0.6, False), (0.4, True)],
        [(0.7, False), (0.3, False)],
        [(0.2, False)],
    ]
    return FilmCandidates.build(
        [1, 1, 0, 0], [0.9, 0.6, 0.7, 0.2], regions, film_ids=["A", "B", "C", "D"]
    )


def test_froc_by_hand():
    c = four_films()
    # budget 0.25 x 4 = 1 FP: the 2nd FP (0.6) is the cut -> only A (0.9) is above
    # budget 2: the cut is the 3rd FP (0.5) -> A; budget 4: the 5th (0.2) -> A and B (0.4)
    # budget 8: never exceeded -> every lesion a region hits
    got = froc_sensitivity(c, (0.25, 0.5, 1.0, 2.0))
    assert got == {0.25: 0.5, 0.5: 0.5, 1.0: 1.0, 2.0: 1.0}
    assert froc_metric_name(0.5) == "film_froc_sens_at_0_5fp"
    assert froc_metric_name(1.0) == "film_froc_sens_at_1fp"
    fp, sens = froc_curve(c)
    assert fp[-1] == pytest.approx(5 / 4) and sens[-1] == 1.0 and np.all(np.diff(fp) >= 0)


def test_hit_rates_and_auc_by_hand():
    c = four_films()
    assert hit_rates(c) == (0.5, 1.0)  # B's top region is a false positive
    assert hit_rates(c, 1) == (0.5, 0.5)
    # positives {0.9, 0.6} vs negatives {0.7, 0.2}: 3 of 4 pairs ordered
    auc = film_roc_auc(c.labels, c.scores)
    assert auc.point == 0.75 and auc.method == "delong"
    s = summarize(c)
    m = s.metrics()
    assert m["film_roc_auc"] == 0.75 and m["film_froc_sens_at_1fp"] == 1.0
    assert m["film_top1_hit_rate"] == 0.5 and m["film_n"] == 4 and m["film_positives"] == 2


def test_two_lesions_in_one_film_count_separately():
    regions = [[(0.8, 0), (0.3, 1)], [(0.5, -1)]]
    c = FilmCandidates.build([1, 0], [0.8, 0.5], regions, n_lesions=[2, 0])
    # 0 FP allowed per image (budget 0): cut at 0.5 -> lesion 0 only
    assert froc_sensitivity(c, (0.0, 0.5)) == {0.0: 0.5, 0.5: 1.0}
    with pytest.raises(StatsInputError, match="outside its lesions"):
        FilmCandidates.build([1, 0], [0.8, 0.5], [[(0.8, 2)], []], n_lesions=[2, 0])
    with pytest.raises(StatsInputError, match="label 0 but 1 lesion"):
        FilmCandidates.build([1, 0], [0.8, 0.5], [[], []], n_lesions=[1, 1])


def test_auc_interval_matches_sklearn_and_narrows():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    intervals = []
    for n in (40, 400):
        y = np.arange(n) % 2
        s = rng.normal(size=n) + y
        ci = film_roc_auc(y, s)
        assert ci.point == pytest.approx(roc_auc_score(y, s))
        assert ci.low < ci.point < ci.high
        intervals.append(ci.high - ci.low)
    assert intervals[1] < intervals[0] / 2
    assert math.isnan(film_roc_auc([1, 1], [0.2, 0.3]).point)


def synthetic_films(n: int, signal: float, seed: int = 0) -> FilmCandidates:
    """``n`` films, half with one lesion; 10 regions each scoring U(0, 0.6); the lesion's
    region scores ``U(0, 0.6) + 0.4 signal``. The same ``seed`` gives the same noise, so two
    scorers differing only in ``signal`` are paired film by film."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(int)
    base = rng.uniform(0.0, 0.6, size=(n, 10))
    regions = []
    for i in range(n):
        film = [(float(b), False) for b in base[i]]
        if labels[i]:
            film[3] = (min(1.0, float(base[i, 3]) + 0.4 * signal), True)
        regions.append(sorted(film, key=lambda r: -r[0]))
    scores = [f[0][0] for f in regions]
    return FilmCandidates.build(labels, scores, regions, film_ids=[f"f{i}" for i in range(n)])


def test_paired_bootstrap_identical_worse_and_fast():
    same = synthetic_films(50, 1.0, 0)
    comp = compare_films(same, same, n_resamples=1000, seed=1)
    for d in comp.deltas.values():
        assert d.delta == 0 and d.low == 0 and d.high == 0 and d.interval.n == 1000
    good, bad = synthetic_films(50, 2.0, 0), synthetic_films(50, 0.0, 0)
    started = time.perf_counter()
    comp = compare_films(bad, good, n_resamples=1000, seed=1, synthetic=True)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    for d in comp.deltas.values():
        assert d.delta < 0 and d.low < d.delta <= d.high
    assert not comp.passes(0.02)["film_froc_sens_at_1fp"]
    assert "SYNTHETIC" in comp.describe() and comp.to_dict()["n"] == 50
    again = compare_films(bad, good, n_resamples=1000, seed=1)
    assert again.deltas["film_roc_auc"].low == comp.deltas["film_roc_auc"].low  # seeded


def test_paired_bootstrap_needs_the_same_films():
    a = synthetic_films(10, 1.0, 0)
    b = FilmCandidates.build(
        a.labels.astype(int), a.scores, [[] for _ in range(10)],
        film_ids=[f"g{i}" for i in range(10)],
    )  # fmt: skip
    with pytest.raises(StatsInputError, match="same films"):
        compare_films(a, b)
    with pytest.raises(StatsInputError, match="n_resamples"):
        compare_films(a, a, n_resamples=10)
