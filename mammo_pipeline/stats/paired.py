"""Paired comparison of a candidate and a reference scorer on the same test tiles.

Owns :func:`compare_paired` and its JSON-safe result :class:`PairedComparison`, the
statistics behind the promotion gate's non-regression rule. For three metrics it estimates
``delta = candidate - reference`` with a confidence interval:

* ``roc_auc``: ROC AUC (ties count one half);
* ``pr_auc``: average precision;
* ``sensitivity_at_specificity``: sensitivity at the reference's operating point. The
  target specificity is the reference's specificity at its own decision threshold on these
  tiles; *both* models are then read by the same rule at that specificity (the lowest
  observed score whose specificity reaches it, see :mod:`.metrics`), so they are compared
  at the same specificity. The reference's own sensitivity at its threshold is also kept
  (``reference_point``); it can only be lower than its reading by the rule, when positives
  score between its threshold and the next negative below it.

Intervals come from a paired, stratified bootstrap (:mod:`.bootstrap`): each resample
redraws positives and negatives separately, weights both models' scores of a tile with the
same count, and recomputes the whole statistic, the target specificity included. The
interval is the percentile interval of the resampled deltas (BCa is not used: its
acceleration needs a jackknife per stratum). ROC AUC also gets DeLong's paired test as a
cross-check (:mod:`.delong`).

A metric passes at ``tolerance`` when the interval's lower bound is ``>= -tolerance``: the
data rule out, at the stated confidence, a loss larger than the tolerance. Anything
undefined fails (NaN in Python, ``None`` in JSON).

Longer than 400 lines because the result types (with their JSON round trip, which the gate
re-checks rather than trusts) and the one function that fills them belong together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mammo_pipeline.stats.bootstrap import auto_chunk, stratified_count_chunks
from mammo_pipeline.stats.delong import DeLongTest, delong_paired
from mammo_pipeline.stats.inputs import (
    StatsInputError,
    as_labels,
    as_scores,
    check_confidence,
    check_fraction,
    check_same_tiles,
)
from mammo_pipeline.stats.intervals import (
    Interval,
    from_json_number,
    json_number,
    percentile_interval,
)
from mammo_pipeline.stats.metrics import (
    OperatingPoint,
    RankIndex,
    operating_point,
)

#: The compared metrics, in report order, with their names for people.
METRICS: dict[str, str] = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "sensitivity_at_specificity": "sensitivity at matched specificity",
}
#: Fewest resamples accepted: the 95% percentile bounds are then the 25th and 975th values.
MIN_RESAMPLES = 1000
METHOD = (
    "paired stratified bootstrap (same count weights for both models), percentile interval; "
    "DeLong paired test for ROC AUC"
)
SCHEMA = "mammo.paired_comparison/1"


def _signed(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "undefined"
    return f"{value:+.{digits}f}".replace("-", "\u2212")


def _fixed(value: float, spec: str = ".3f") -> str:
    return format(value, spec) if math.isfinite(value) else "undefined"


@dataclass(frozen=True)
class PairedDelta:
    """``candidate - reference`` for one metric, with its bootstrap interval."""

    metric: str
    candidate: float
    reference: float
    #: point = delta on all tiles; low/high = percentile bounds; n = resamples
    interval: Interval

    @property
    def delta(self) -> float:
        return self.interval.point

    @property
    def low(self) -> float:
        return self.interval.low

    @property
    def high(self) -> float:
        return self.interval.high

    def passes(self, tolerance: float) -> bool:
        """True when the lower bound is ``>= -tolerance``; False when anything is undefined."""
        tol = check_fraction(tolerance, "tolerance")
        values = (self.candidate, self.reference, self.delta, self.low, self.high)
        return all(math.isfinite(v) for v in values) and self.low >= -tol

    def describe(self, digits: int = 3) -> str:
        """E.g. ``ΔROC AUC +0.012 [−0.008, +0.031] (candidate 0.912, reference 0.900)``."""
        label = METRICS.get(self.metric, self.metric)
        return (
            f"\u0394{label} {_signed(self.delta, digits)} "
            f"[{_signed(self.low, digits)}, {_signed(self.high, digits)}] "
            f"(candidate {_fixed(self.candidate, f'.{digits}f')}, "
            f"reference {_fixed(self.reference, f'.{digits}f')})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (undefined numbers become ``None``)."""
        return {
            "metric": self.metric,
            "candidate": json_number(self.candidate),
            "reference": json_number(self.reference),
            "delta": json_number(self.delta),
            "low": json_number(self.low),
            "high": json_number(self.high),
            "confidence": self.interval.confidence,
            "n_resamples": self.interval.n,
            "interval_method": self.interval.method,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedDelta:
        """Inverse of :meth:`to_dict`."""
        interval = Interval(
            point=from_json_number(data["delta"]),
            low=from_json_number(data["low"]),
            high=from_json_number(data["high"]),
            n=int(data["n_resamples"]),
            confidence=float(data["confidence"]),
            method=str(data["interval_method"]),
        )
        return cls(
            metric=str(data["metric"]),
            candidate=from_json_number(data["candidate"]),
            reference=from_json_number(data["reference"]),
            interval=interval,
        )


@dataclass(frozen=True)
class PairedComparison:
    """Result of :func:`compare_paired`: what was compared, how, and the deltas."""

    n: int
    positives: int
    negatives: int
    n_resamples: int
    seed: int
    confidence: float
    tolerance: float
    method: str
    #: True for SYNTHETIC data, False for real data, None when the caller did not say
    synthetic: bool | None
    #: the caller's name for where the predictions came from (file, run ids), if given
    source: str | None
    reference_threshold: float
    #: the reference's specificity at its threshold: the matched operating point
    target_specificity: float
    #: the candidate's threshold giving (at least) the target specificity
    candidate_threshold: float
    reference_point: OperatingPoint
    candidate_point: OperatingPoint
    deltas: dict[str, PairedDelta]
    delong: DeLongTest

    @property
    def roc_auc(self) -> PairedDelta:
        return self.deltas["roc_auc"]

    @property
    def pr_auc(self) -> PairedDelta:
        return self.deltas["pr_auc"]

    @property
    def sensitivity_at_specificity(self) -> PairedDelta:
        return self.deltas["sensitivity_at_specificity"]

    def checks(self, tolerance: float | None = None) -> dict[str, bool]:
        """Pass/fail per metric at ``tolerance`` (default: the one given to compare_paired)."""
        tol = self.tolerance if tolerance is None else tolerance
        return {name: self.deltas[name].passes(tol) for name in METRICS}

    def passes(self, tolerance: float | None = None, metrics: Iterable[str] = METRICS) -> bool:
        """True only when every metric in ``metrics`` passes (an unknown name fails)."""
        tol = self.tolerance if tolerance is None else tolerance
        names = list(metrics)
        return bool(names) and all(n in self.deltas and self.deltas[n].passes(tol) for n in names)

    @property
    def data_kind(self) -> str:
        if self.synthetic is None:
            return "data origin not stated (SYNTHETIC or real?)"
        return "SYNTHETIC data" if self.synthetic else "real data"

    def describe(self, digits: int = 3) -> str:
        """A short text for people: one line per delta, DeLong, and how it was computed."""
        pct = f"{self.confidence:.0%}"
        lines = [
            f"Candidate \u2212 reference on the same {self.n} test tiles "
            f"({self.positives} pos, {self.negatives} neg; {self.data_kind})"
            + (f" from {self.source}" if self.source else ""),
        ]
        verdicts = self.checks()
        for name, delta in self.deltas.items():
            verdict = "pass" if verdicts[name] else "FAIL"
            lines.append(f"  {delta.describe(digits)}  {verdict} at tolerance {self.tolerance:g}")
        lines.append(
            f"  matched operating point: specificity "
            f"{_fixed(self.target_specificity, f'.{digits}f')} (reference threshold "
            f"{_fixed(self.reference_threshold, '.4g')}, candidate threshold "
            f"{_fixed(self.candidate_threshold, '.4g')}); reference sensitivity at its own "
            f"threshold {_fixed(self.reference_point.sensitivity, f'.{digits}f')}"
        )
        d = self.delong
        lines.append(
            f"  DeLong \u0394ROC AUC {_signed(d.delta, digits)} "
            f"[{_signed(d.low, digits)}, {_signed(d.high, digits)}], z={_fixed(d.z, '.2f')}, "
            f"p={_fixed(d.p_value, '.3g')}"
        )
        lines.append(
            f"  {pct} intervals: paired stratified bootstrap, percentile, "
            f"{self.n_resamples} resamples, seed {self.seed}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (no NaN or infinity: undefined numbers are ``None``)."""
        return {
            "schema": SCHEMA,
            "n": self.n,
            "positives": self.positives,
            "negatives": self.negatives,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
            "tolerance": self.tolerance,
            "method": self.method,
            "synthetic": self.synthetic,
            "source": self.source,
            "reference_threshold": json_number(self.reference_threshold),
            "target_specificity": json_number(self.target_specificity),
            "candidate_threshold": json_number(self.candidate_threshold),
            "reference_point": self.reference_point.to_dict(),
            "candidate_point": self.candidate_point.to_dict(),
            "deltas": {name: d.to_dict() for name, d in self.deltas.items()},
            "checks": self.checks(),
            "passes": self.passes(),
            "delong": self.delong.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> PairedComparison:
        """Inverse of :meth:`to_dict` (``checks``/``passes`` are recomputed, not trusted).

        A record of another schema, or with a missing or malformed field, raises
        :class:`StatsInputError` naming ``source`` (e.g. the artifact path).
        """
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise StatsInputError(source, f"not a paired comparison of schema {SCHEMA}: {found!r}")
        try:
            return cls._from_fields(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StatsInputError(
                source, f"paired comparison record: missing or malformed field ({exc!r})"
            ) from None

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> PairedComparison:
        synthetic = data["synthetic"]
        return cls(
            n=int(data["n"]),
            positives=int(data["positives"]),
            negatives=int(data["negatives"]),
            n_resamples=int(data["n_resamples"]),
            seed=int(data["seed"]),
            confidence=float(data["confidence"]),
            tolerance=float(data["tolerance"]),
            method=str(data["method"]),
            synthetic=None if synthetic is None else bool(synthetic),
            source=data.get("source"),
            reference_threshold=from_json_number(data["reference_threshold"]),
            target_specificity=from_json_number(data["target_specificity"]),
            candidate_threshold=from_json_number(data["candidate_threshold"]),
            reference_point=OperatingPoint.from_dict(data["reference_point"]),
            candidate_point=OperatingPoint.from_dict(data["candidate_point"]),
            deltas={k: PairedDelta.from_dict(v) for k, v in data["deltas"].items()},
            delong=DeLongTest.from_dict(data["delong"]),
        )


class PairedStatistic:
    """The three metrics of both models under columns of stratified count weights.

    The statistic that :func:`compare_paired` bootstraps, exposed so that it can be checked
    against a plain index-resampling computation on the same resamples.
    """

    def __init__(
        self, positive: np.ndarray, candidate: np.ndarray, reference: np.ndarray, threshold: float
    ) -> None:
        self.positives = int(positive.sum())
        self.indexes = (RankIndex.of(positive, candidate), RankIndex.of(positive, reference))
        self.reference_calls_negative = (reference[~positive] >= threshold).astype(np.float64)

    def __call__(self, pos_counts: np.ndarray, neg_counts: np.ndarray) -> tuple[np.ndarray, int]:
        """``(3, 2, B)`` values (metric x [candidate, reference] x resample), and for the
        first resample the number of the candidate's sorted negatives within the budget."""
        max_fp = self.reference_calls_negative @ neg_counts  # reference's FP at its threshold
        out = np.empty((3, 2, pos_counts.shape[1]))
        within = 0
        for j, index in enumerate(self.indexes):
            m = index.metrics(pos_counts, neg_counts, max_fp)
            out[0, j] = m.roc_auc
            out[1, j] = m.average_precision
            out[2, j] = m.true_positives / self.positives
            if j == 0:
                within = int(m.negatives_within[0])
        return out, within


def _check_resamples(n_resamples: Any, seed: Any) -> tuple[int, int]:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, Integral):
        raise StatsInputError(None, f"n_resamples must be a whole number, got {n_resamples!r}")
    if n_resamples < MIN_RESAMPLES:
        raise StatsInputError(
            None, f"n_resamples must be >= {MIN_RESAMPLES} for a gate, got {n_resamples}"
        )
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise StatsInputError(None, f"seed must be a whole number >= 0, got {seed!r}")
    return int(n_resamples), int(seed)


def compare_paired(
    y_true: Any,
    candidate: Any,
    reference: Any,
    *,
    reference_threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    tolerance: float = 0.0,
    candidate_ids: Sequence[Any] | np.ndarray | None = None,
    reference_ids: Sequence[Any] | np.ndarray | None = None,
    synthetic: bool | None = None,
    source: str | None = None,
    progress: bool = False,
    chunk: int | None = None,
) -> PairedComparison:
    """Compare ``candidate`` with ``reference`` scores on the same labelled test tiles.

    ``y_true``: 0/1 per tile; ``candidate``/``reference``: one finite score per tile, same
    tiles, same order (checked position by position when ``candidate_ids`` and
    ``reference_ids`` are given); ``reference_threshold``: the reference's decision
    threshold (``score >= threshold`` is positive), which fixes the matched specificity.
    ``tolerance`` is stored as the default for :meth:`PairedComparison.passes`;
    ``synthetic`` and ``source`` are recorded and shown. ``chunk`` resamples are evaluated
    at a time (default: :func:`~.bootstrap.auto_chunk`, a few 4 MB arrays); the result does
    not depend on it.

    Raises :class:`StatsInputError` (one line, naming the array, index and problem) for
    labels other than 0/1, a missing class, scores of the wrong length, non-finite scores,
    differing tile ids, fewer than :data:`MIN_RESAMPLES` resamples or bad parameters.
    """
    positive = as_labels(y_true, name="labels", source=source)
    n = int(positive.shape[0])
    cand = as_scores(candidate, n, name="candidate scores", source=source)
    ref = as_scores(reference, n, name="reference scores", source=source)
    check_same_tiles(candidate_ids, reference_ids, n, source=source)
    try:
        threshold = float(reference_threshold)
    except (TypeError, ValueError):
        threshold = math.nan
    if not math.isfinite(threshold):
        raise StatsInputError(
            source, f"reference_threshold must be a finite number, got {reference_threshold!r}"
        )
    conf = check_confidence(confidence)
    tol = check_fraction(tolerance, "tolerance")
    resamples, seed = _check_resamples(n_resamples, seed)
    n_pos = int(positive.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        missing = "positive" if n_pos == 0 else "negative"
        raise StatsInputError(
            source, f"labels: no {missing} tile among {n}; the models cannot be compared"
        )

    statistic = PairedStatistic(positive, cand, ref, threshold)
    point, within = statistic(np.ones((n_pos, 1)), np.ones((n_neg, 1)))
    candidate_threshold = statistic.indexes[0].threshold_above_negatives(within)

    deltas = np.empty((3, resamples))
    done = 0
    if chunk is None:
        chunk = auto_chunk(n, resamples)
    chunks = stratified_count_chunks(n_pos, n_neg, resamples, seed, chunk)
    with tqdm(
        total=resamples, desc="paired bootstrap", unit="resample", disable=not progress
    ) as bar:
        for pos_counts, neg_counts in chunks:
            values, _ = statistic(pos_counts, neg_counts)
            columns = values.shape[2]
            deltas[:, done : done + columns] = values[:, 0] - values[:, 1]
            done += columns
            bar.update(columns)

    results = {}
    for i, name in enumerate(METRICS):
        candidate_value, reference_value = (float(v) for v in point[i, :, 0])
        interval = percentile_interval(candidate_value - reference_value, deltas[i], conf)
        results[name] = PairedDelta(name, candidate_value, reference_value, interval)

    reference_point = operating_point(positive, ref, threshold)
    return PairedComparison(
        n=n,
        positives=n_pos,
        negatives=n_neg,
        n_resamples=resamples,
        seed=seed,
        confidence=conf,
        tolerance=tol,
        method=METHOD,
        synthetic=synthetic,
        source=source,
        reference_threshold=threshold,
        target_specificity=reference_point.specificity,
        candidate_threshold=candidate_threshold,
        reference_point=reference_point,
        candidate_point=operating_point(positive, cand, candidate_threshold),
        deltas=results,
        delong=delong_paired(positive, cand, ref, conf),
    )
