"""Film-level statistics: what ``/analyze`` answers, judged per whole mammogram.

Owns :class:`FilmCandidates` (one scorer's answers on a set of films), the film ROC AUC with
its interval, FROC, the localisation hit rates and :func:`compare_films`, the paired
bootstrap over films behind the gate's film non-regression rule. Pure NumPy; imports only
``stats``.

Input, per film: the label (1 = the film holds at least one lesion), the film score (the
image score of ``/analyze``: the largest window probability) and the candidate regions
(the top-k windows after non-maximum suppression), each with its probability and which
lesion it *hits* (the region's box contains the lesion's centre; -1 = a false positive).

Definitions (``score >= t`` is "called" everywhere):

* **film ROC AUC**: Mann-Whitney AUC of the film scores (ties one half) with DeLong's
  variance (placement values, :mod:`.delong`) and a Wald interval clipped to [0, 1]
  (``method="delong"``);
* **FROC sensitivity at x false positives per image**: lesion-level. A lesion's detection
  score is the highest score of a region hitting it (none: never detected). Among all the
  regions that hit no lesion, sorted by score, the cut is the score of the first one at which
  the count of false positives exceeds ``x * films``; sensitivity is the share of lesions whose
  detection score is strictly above that cut (every false-positive region at or above the
  cut would be called with it). This is the lowest threshold whose false positives per image
  stay ``<= x``. Only the top-k regions per film are candidates, so the FROC curve stops at
  the operating points those allow;
* **top-1 / top-k hit rate**: among films with lesions, the share whose highest-scoring
  region (resp. any of the top-k regions) hits a lesion;
* **paired bootstrap** (:func:`compare_films`): films resampled with replacement, stratified
  by label (:func:`~.bootstrap.stratified_count_chunks`, seeded), the same count weight
  applied to the candidate's and the reference's answer on a film; percentile interval of
  ``candidate - reference`` for the film ROC AUC and the FROC sensitivity at 1 FP/image.
  Vectorised over resamples: 1,000 resamples of 50 films take milliseconds.

Longer than 400 lines because the input type, the three statistics and the paired
comparison read the same arrays and share their conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammo_pipeline.stats.bootstrap import auto_chunk, stratified_count_chunks
from mammo_pipeline.stats.delong import placement_values
from mammo_pipeline.stats.inputs import StatsInputError, as_labels, as_scores, check_confidence
from mammo_pipeline.stats.intervals import (
    Interval,
    json_number,
    percentile_interval,
    two_sided_z,
)
from mammo_pipeline.stats.metrics import RankIndex
from mammo_pipeline.stats.paired import MIN_RESAMPLES, PairedDelta

#: False positives per image at which the FROC sensitivity is reported.
FROC_RATES: tuple[float, ...] = (0.5, 1.0, 2.0)
#: Metric names of the film-level deltas compared by :func:`compare_films` (and the gate).
FILM_METRICS: dict[str, str] = {
    "film_roc_auc": "film ROC AUC",
    "film_froc_sens_at_1fp": "FROC sensitivity at 1 FP/image",
}
FILM_SCHEMA = "mammo.film_comparison/1"


def froc_metric_name(rate: float) -> str:
    """``film_froc_sens_at_0_5fp``, ``film_froc_sens_at_1fp``, ``film_froc_sens_at_2fp``."""
    text = f"{rate:g}".replace(".", "_")
    return f"film_froc_sens_at_{text}fp"


@dataclass(frozen=True)
class FilmCandidates:
    """One scorer's answers on ``n`` films (rows in the same order for every scorer).

    ``region_scores`` ``(n, K)``: the candidate regions' probabilities, NaN where a film has
    fewer than K regions; ``region_lesion`` ``(n, K)``: the index (within its film) of the
    lesion each region hits, -1 for none; ``n_lesions`` ``(n,)``.
    """

    labels: np.ndarray  # (n,) bool
    scores: np.ndarray  # (n,) float64
    region_scores: np.ndarray
    region_lesion: np.ndarray
    n_lesions: np.ndarray
    film_ids: tuple[str, ...] | None = None

    @classmethod
    def build(
        cls,
        labels: Any,
        scores: Any,
        regions: Sequence[Sequence[tuple[float, int | bool | None]]],
        *,
        n_lesions: Sequence[int] | None = None,
        film_ids: Sequence[str] | None = None,
        source: str | None = None,
    ) -> FilmCandidates:
        """From per-film lists of ``(score, hit)``; ``hit`` is True/False (the film's lesion
        0 / none) or a lesion index (-1 or None: none). ``n_lesions`` defaults to 1 for
        positive films and 0 for negative ones."""
        positive = as_labels(labels, name="film labels", source=source)
        n = positive.shape[0]
        s = as_scores(scores, n, name="film scores", source=source)
        if len(regions) != n:
            raise StatsInputError(source, f"regions: {len(regions)} lists for {n} films")
        k = max((len(r) for r in regions), default=0)
        rs = np.full((n, max(k, 1)), np.nan)
        rl = np.full((n, max(k, 1)), -1, dtype=np.int64)
        for i, film in enumerate(regions):
            for j, (score, hit) in enumerate(film):
                rs[i, j] = float(score)
                if hit is True:
                    rl[i, j] = 0
                elif hit is None or hit is False:
                    rl[i, j] = -1
                else:
                    rl[i, j] = int(hit)
        lesions = positive.astype(np.int64) if n_lesions is None else np.asarray(n_lesions)
        ids = tuple(str(f) for f in film_ids) if film_ids is not None else None
        return cls(positive, s, rs, rl, lesions.astype(np.int64), ids).checked(source)

    def checked(self, source: str | None = None) -> FilmCandidates:
        n = self.labels.shape[0]
        if self.region_scores.shape != self.region_lesion.shape or (
            self.region_scores.ndim != 2 or self.region_scores.shape[0] != n
        ):
            raise StatsInputError(source, f"regions: shapes {self.region_scores.shape} / "
                                  f"{self.region_lesion.shape} for {n} films")  # fmt: skip
        if self.n_lesions.shape != (n,) or (self.n_lesions < 0).any():
            raise StatsInputError(source, "n_lesions: one count >= 0 per film expected")
        if np.any((self.n_lesions > 0) != self.labels):
            i = int(np.flatnonzero((self.n_lesions > 0) != self.labels)[0])
            raise StatsInputError(
                source, f"film {self._name(i)}: label {int(self.labels[i])} but "
                f"{self.n_lesions[i]} lesion(s)"
            )  # fmt: skip
        bad = (self.region_lesion >= self.n_lesions[:, None]) | (self.region_lesion < -1)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise StatsInputError(source, f"film {self._name(i)}: a region hits a lesion "
                                  "index outside its lesions")  # fmt: skip
        finite = np.isfinite(self.region_scores)
        if ((self.region_lesion >= 0) & ~finite).any():
            raise StatsInputError(source, "regions: a hit without a finite score")
        if self.film_ids is not None and len(self.film_ids) != n:
            raise StatsInputError(source, f"film ids: {len(self.film_ids)} for {n} films")
        return self

    def _name(self, i: int) -> str:
        return self.film_ids[i] if self.film_ids is not None else f"#{i}"

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    @property
    def lesions(self) -> int:
        return int(self.n_lesions.sum())

    def lesion_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """``(film index, detection score)`` of every lesion; -inf when no region hits it."""
        films = np.repeat(np.arange(self.n), self.n_lesions)
        first = np.concatenate(([0], np.cumsum(self.n_lesions)[:-1]))
        best = np.full(films.shape[0], -np.inf)
        rows, cols = np.nonzero(self.region_lesion >= 0)
        idx = first[rows] + self.region_lesion[rows, cols]
        np.maximum.at(best, idx, self.region_scores[rows, cols])
        return films, best

    def false_positives(self) -> tuple[np.ndarray, np.ndarray]:
        """``(film index, score)`` of every region hitting no lesion, descending score."""
        mask = np.isfinite(self.region_scores) & (self.region_lesion < 0)
        rows, _ = np.nonzero(mask)
        scores = self.region_scores[mask]
        order = np.argsort(-scores, kind="stable")
        return rows[order], scores[order]


def film_roc_auc(labels: Any, scores: Any, confidence: float = 0.95) -> Interval:
    """Film ROC AUC with DeLong's variance and a Wald interval clipped to [0, 1].

    Undefined (NaN) without both classes; the interval is undefined with fewer than two of
    either class."""
    positive = as_labels(labels, name="film labels")
    s = as_scores(scores, positive.shape[0], name="film scores")
    c = check_confidence(confidence)
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return Interval(math.nan, math.nan, math.nan, m + n, c, "delong")
    v10, v01 = placement_values(s[positive], s[~positive])
    auc = float(v10.mean())
    if m < 2 or n < 2:
        return Interval(auc, math.nan, math.nan, m + n, c, "delong")
    se = math.sqrt(max(float(v10.var(ddof=1)) / m + float(v01.var(ddof=1)) / n, 0.0))
    z = two_sided_z(c)
    return Interval(auc, max(0.0, auc - z * se), min(1.0, auc + z * se), m + n, c, "delong")


def _froc_batch(c: FilmCandidates, weights: np.ndarray, rates: Sequence[float]) -> np.ndarray:
    """FROC sensitivity at each rate under count weights of the films ``(n, B)``: ``(R, B)``."""
    fp_film, fp_score = c.false_positives()
    lesion_film, lesion_score = c.lesion_scores()
    b = weights.shape[1]
    total = weights.sum(axis=0)
    cum = np.cumsum(np.take(weights, fp_film, axis=0), axis=0)  # (M, B)
    lw = np.take(weights, lesion_film, axis=0)  # (L, B)
    denom = lw.sum(axis=0)
    out = np.full((len(rates), b), np.nan)
    for r, rate in enumerate(rates):
        exceeded = cum > (rate * total)[None, :] + 1e-9
        if fp_score.size:
            cut = np.where(exceeded.any(axis=0), fp_score[exceeded.argmax(axis=0)], -np.inf)
        else:
            cut = np.full(b, -np.inf)
        detected = lesion_score[:, None] > cut[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[r] = np.einsum("lb,lb->b", lw, detected.astype(np.float64)) / denom
    return out


def froc_sensitivity(c: FilmCandidates, rates: Sequence[float] = FROC_RATES) -> dict[float, float]:
    """Lesion-level sensitivity at each false-positive rate per image (NaN without lesions)."""
    values = _froc_batch(c, np.ones((c.n, 1)), rates)[:, 0]
    return {float(r): float(v) for r, v in zip(rates, values, strict=True)}


def froc_curve(c: FilmCandidates) -> tuple[np.ndarray, np.ndarray]:
    """``(false positives per image, lesion sensitivity)`` at every distinct region score,
    from the highest threshold down (for plotting)."""
    _, fp_score = c.false_positives()
    _, lesion_score = c.lesion_scores()
    finite = c.region_scores[np.isfinite(c.region_scores)]
    thresholds = np.unique(finite)[::-1]
    fp = (fp_score[None, :] >= thresholds[:, None]).sum(axis=1) / max(c.n, 1)
    lesions = max(lesion_score.shape[0], 1)
    sens = (lesion_score[None, :] >= thresholds[:, None]).sum(axis=1) / lesions
    return np.concatenate(([0.0], fp)), np.concatenate(([0.0], sens))


def hit_rates(c: FilmCandidates, k: int | None = None) -> tuple[float, float]:
    """(top-1, top-k) localisation hit rate over the films with lesions (NaN without)."""
    films = np.flatnonzero(c.n_lesions > 0)
    if films.size == 0:
        return math.nan, math.nan
    scores = np.where(np.isfinite(c.region_scores), c.region_scores, -np.inf)[films]
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(c.region_lesion[films] >= 0, order, axis=1)
    hits &= np.take_along_axis(np.isfinite(scores), order, axis=1)
    kk = hits.shape[1] if k is None else max(1, min(int(k), hits.shape[1]))
    return float(hits[:, 0].mean()), float(hits[:, :kk].any(axis=1).mean())


@dataclass(frozen=True)
class FilmSummary:
    """The film-level figures of one scorer (what a training run logs)."""

    n: int
    positives: int
    lesions: int
    k: int
    roc_auc: Interval
    froc: dict[float, float]
    top1_hit_rate: float
    topk_hit_rate: float

    def metrics(self) -> dict[str, float]:
        """MLflow metric names -> values (NaN for undefined)."""
        out = {
            "film_roc_auc": self.roc_auc.point,
            "film_roc_auc_low": self.roc_auc.low,
            "film_roc_auc_high": self.roc_auc.high,
            "film_top1_hit_rate": self.top1_hit_rate,
            "film_topk_hit_rate": self.topk_hit_rate,
            "film_n": float(self.n),
            "film_positives": float(self.positives),
            "film_lesions": float(self.lesions),
            "film_top_k": float(self.k),
        }
        out.update({froc_metric_name(r): v for r, v in self.froc.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "positives": self.positives,
            "lesions": self.lesions,
            "k": self.k,
            "roc_auc": self.roc_auc.to_dict(),
            "froc": {f"{r:g}": json_number(v) for r, v in self.froc.items()},
            "top1_hit_rate": json_number(self.top1_hit_rate),
            "topk_hit_rate": json_number(self.topk_hit_rate),
        }


def summarize(
    c: FilmCandidates, confidence: float = 0.95, rates: Sequence[float] = FROC_RATES
) -> FilmSummary:
    """Film ROC AUC [CI], FROC sensitivities and hit rates of one scorer."""
    top1, topk = hit_rates(c)
    return FilmSummary(
        n=c.n,
        positives=c.positives,
        lesions=c.lesions,
        k=int(c.region_scores.shape[1]),
        roc_auc=film_roc_auc(c.labels, c.scores, confidence),
        froc=froc_sensitivity(c, rates),
        top1_hit_rate=top1,
        topk_hit_rate=topk,
    )


@dataclass(frozen=True)
class FilmComparison:
    """Result of :func:`compare_films`: candidate - reference on the same films."""

    n: int
    positives: int
    lesions: int
    n_resamples: int
    seed: int
    confidence: float
    synthetic: bool | None
    source: str | None
    deltas: dict[str, PairedDelta]

    def passes(self, tolerance: float) -> dict[str, bool]:
        return {name: d.passes(tolerance) for name, d in self.deltas.items()}

    def describe(self, digits: int = 3) -> str:
        kind = {None: "data origin not stated", True: "SYNTHETIC data", False: "real data"}
        lines = [
            f"Candidate \u2212 reference on the same {self.n} films ({self.positives} with "
            f"lesions, {self.lesions} lesions; {kind[self.synthetic]})"
        ]
        lines += [f"  {d.describe(digits)}" for d in self.deltas.values()]
        lines.append(
            f"  {self.confidence:.0%} intervals: paired bootstrap over films stratified by "
            f"label, percentile, {self.n_resamples} resamples, seed {self.seed}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": FILM_SCHEMA,
            "n": self.n,
            "positives": self.positives,
            "lesions": self.lesions,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "synthetic": self.synthetic,
            "source": self.source,
            "method": "paired bootstrap over films, stratified by label, percentile interval",
            "deltas": {name: d.to_dict() for name, d in self.deltas.items()},
        }


def _same_films(candidate: FilmCandidates, reference: FilmCandidates, source: str | None) -> None:
    if candidate.n != reference.n:
        raise StatsInputError(source, f"{candidate.n} candidate films, {reference.n} reference")
    if (candidate.film_ids is None) != (reference.film_ids is None) or (
        candidate.film_ids is not None and candidate.film_ids != reference.film_ids
    ):
        raise StatsInputError(source, "the two were not scored on the same films in the same order")
    if not np.array_equal(candidate.labels, reference.labels) or not np.array_equal(
        candidate.n_lesions, reference.n_lesions
    ):
        raise StatsInputError(source, "the films' labels or lesion counts differ")


def compare_films(
    candidate: FilmCandidates,
    reference: FilmCandidates,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    synthetic: bool | None = None,
    source: str | None = None,
) -> FilmComparison:
    """Paired bootstrap over films of Δfilm ROC AUC and ΔFROC sensitivity at 1 FP/image.

    Raises :class:`StatsInputError` when the two were not scored on the same films, when a
    class of films is missing, or for fewer than :data:`~.paired.MIN_RESAMPLES` resamples."""
    _same_films(candidate, reference, source)
    conf = check_confidence(confidence)
    if int(n_resamples) < MIN_RESAMPLES or int(seed) < 0:
        raise StatsInputError(source, f"need n_resamples >= {MIN_RESAMPLES} and seed >= 0")
    positive = candidate.labels
    pos_idx, neg_idx = np.flatnonzero(positive), np.flatnonzero(~positive)
    if pos_idx.size == 0 or neg_idx.size == 0:
        raise StatsInputError(source, "film labels: both films with and without lesions needed")
    indexes = [RankIndex.of(positive, x.scores) for x in (candidate, reference)]

    def statistic(pos_w: np.ndarray, neg_w: np.ndarray) -> np.ndarray:
        """(2 metrics, 2 scorers, B)."""
        weights = np.empty((candidate.n, pos_w.shape[1]))
        weights[pos_idx], weights[neg_idx] = pos_w, neg_w
        zero = np.zeros(pos_w.shape[1])
        out = np.empty((2, 2, pos_w.shape[1]))
        for j, (index, c) in enumerate(zip(indexes, (candidate, reference), strict=True)):
            out[0, j] = index.metrics(pos_w, neg_w, zero).roc_auc
            out[1, j] = _froc_batch(c, weights, (1.0,))[0]
        return out

    point = statistic(np.ones((pos_idx.size, 1)), np.ones((neg_idx.size, 1)))
    deltas = np.empty((2, int(n_resamples)))
    done = 0
    chunk = auto_chunk(candidate.n * candidate.region_scores.shape[1], int(n_resamples))
    for pos_w, neg_w in stratified_count_chunks(
        pos_idx.size, neg_idx.size, int(n_resamples), int(seed), chunk
    ):
        values = statistic(pos_w, neg_w)
        deltas[:, done : done + values.shape[2]] = values[:, 0] - values[:, 1]
        done += values.shape[2]
    results = {}
    for i, name in enumerate(FILM_METRICS):
        cand, ref = (float(v) for v in point[i, :, 0])
        interval = percentile_interval(cand - ref, deltas[i], conf)
        results[name] = PairedDelta(name, cand, ref, interval)
    return FilmComparison(
        n=candidate.n,
        positives=candidate.positives,
        lesions=candidate.lesions,
        n_resamples=int(n_resamples),
        seed=int(seed),
        confidence=conf,
        synthetic=synthetic,
        source=source,
        deltas=results,
    )
