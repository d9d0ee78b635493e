"""Rank metrics of one binary scorer, for one set of count weights or a batch of them.

Owns ROC AUC, average precision (PR AUC), the operating point at a decision threshold and
the sensitivity at a target specificity. Scores are sorted once per model
(:class:`RankIndex`); a set of count weights (how often each tile is drawn, e.g. by a
bootstrap resample; all ones for the plain metric) is turned into cumulative weights of the
positives and of the negatives in descending score order, and every metric is read from
those at positions computed once. All of it is vectorised over a batch of weight rows.

Conventions (the same everywhere in the platform):

* a tile is predicted positive when ``score >= threshold``;
* ties: tiles with equal scores form one group, crossed together by any threshold. ROC AUC
  counts a tied positive/negative pair as one half (Mann-Whitney), average precision sums
  ``(R_k - R_{k-1}) * P_k`` over the distinct thresholds. With all weights equal to one both
  equal scikit-learn's ``roc_auc_score`` / ``average_precision_score`` (up to round-off);
* ``threshold_for_specificity``: the threshold is the *lowest observed score* ``t`` whose
  specificity (the share of negatives with ``score < t``) reaches the target, so that the
  sensitivity is the largest any threshold can give at that specificity. When even the
  highest score does not reach it (a negative holds the top score and the target is 1),
  the threshold is the next float above the highest score: nothing is called positive;
* undefined values (a precision with no predicted positive, a sensitivity without positive
  tiles) are NaN, never 0, and ``None`` in JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammo_pipeline.stats.inputs import (
    StatsInputError,
    as_count_weights,
    as_labels,
    as_scores,
    check_fraction,
)
from mammo_pipeline.stats.intervals import Interval, json_number, wilson_interval


def _count_above(sorted_desc: np.ndarray, values: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """How many of ``sorted_desc`` are ``> values`` (or ``>=`` with ``inclusive``)."""
    return np.searchsorted(-sorted_desc, -values, side="right" if inclusive else "left")


@dataclass(frozen=True)
class BatchMetrics:
    """Metrics of one scorer under ``B`` columns of count weights (arrays of shape ``(B,)``)."""

    roc_auc: np.ndarray
    average_precision: np.ndarray
    #: sorted negatives whose cumulative weight fits the false-positive budget
    negatives_within: np.ndarray
    #: weighted true positives at the lowest threshold within the budget
    true_positives: np.ndarray


@dataclass(frozen=True)
class RankIndex:
    """One scorer's scores, sorted once, as indices for weighted rank metrics.

    Count weights come as two matrices, one row per tile and one column per resample:
    ``pos_counts`` ``(m, B)`` over the positive tiles and ``neg_counts`` ``(n, B)`` over the
    negative tiles, rows in the tiles' original order (tile-major, so that reordering and
    cumulative sums move whole contiguous rows). Every metric is read from the cumulative
    weights of the negatives (and of the positives) in descending score order at
    precomputed positions: about two passes over the tiles per resample.
    """

    #: positive / negative tiles (indices into their own class) in descending score order
    pos_order: np.ndarray
    neg_order: np.ndarray
    #: per positive (original order): negatives scoring > it, and >= it
    neg_above: np.ndarray
    neg_at_or_above: np.ndarray
    #: per positive (original order): positives scoring >= it
    pos_at_or_above: np.ndarray
    #: per sorted negative j, plus one final entry m: positives scoring > negative j
    pos_above_neg: np.ndarray
    #: negative scores in descending order; all distinct scores in ascending order
    neg_scores_desc: np.ndarray
    distinct_scores: np.ndarray

    @classmethod
    def of(cls, positive: np.ndarray, scores: np.ndarray) -> RankIndex:
        """Index validated ``positive`` (bool) and finite ``scores`` (at least one of each)."""
        pos_scores = scores[positive]
        neg_scores = scores[~positive]
        pos_order = np.argsort(-pos_scores, kind="stable")
        neg_order = np.argsort(-neg_scores, kind="stable")
        pos_desc = pos_scores[pos_order]
        neg_desc = neg_scores[neg_order]
        above_neg = _count_above(pos_desc, neg_desc, inclusive=False)
        return cls(
            pos_order=pos_order,
            neg_order=neg_order,
            neg_above=_count_above(neg_desc, pos_scores, inclusive=False),
            neg_at_or_above=_count_above(neg_desc, pos_scores, inclusive=True),
            pos_at_or_above=_count_above(pos_desc, pos_scores, inclusive=True),
            pos_above_neg=np.append(above_neg, pos_scores.shape[0]),
            neg_scores_desc=neg_desc,
            distinct_scores=np.unique(scores),
        )

    def cumulative(
        self, pos_counts: np.ndarray, neg_counts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative weights in descending score order, with a leading zero row:
        ``(m + 1, B)`` for the positives and ``(n + 1, B)`` for the negatives."""
        b = pos_counts.shape[1]
        cum_pos = np.zeros((pos_counts.shape[0] + 1, b))
        # np.take moves whole rows (several times faster than fancy indexing here)
        np.cumsum(np.take(pos_counts, self.pos_order, axis=0), axis=0, out=cum_pos[1:])
        cum_neg = np.zeros((neg_counts.shape[0] + 1, b))
        np.cumsum(np.take(neg_counts, self.neg_order, axis=0), axis=0, out=cum_neg[1:])
        return cum_pos, cum_neg

    def metrics(
        self, pos_counts: np.ndarray, neg_counts: np.ndarray, max_fp: np.ndarray
    ) -> BatchMetrics:
        """ROC AUC, average precision and the reading within a false-positive budget.

        ROC AUC = P(score_pos > score_neg) + 1/2 P(equal); average precision = sum over
        the positives of weight x precision at the threshold equal to its score, divided
        by the positives' weight (= sum over thresholds of (R_k - R_{k-1}) * P_k). The
        budget ``max_fp`` ``(B,)``: the lowest threshold whose weighted false positives
        stay ``<= max_fp``, i.e. whose specificity is at least ``1 - max_fp / negatives``,
        calls positive exactly the tiles scoring above the first negative (in descending
        order) at which the cumulative negative weight exceeds the budget. Resamples
        without positives (or, for ROC AUC, negatives) give NaN.
        """
        cum_pos, cum_neg = self.cumulative(pos_counts, neg_counts)
        n_pos = cum_pos[-1]
        n_neg = cum_neg[-1]
        # per positive: weighted negatives scoring above it / at or above it, and the
        # true positives of the threshold equal to its score
        above = np.take(cum_neg, self.neg_above, axis=0)
        at_or_above = np.take(cum_neg, self.neg_at_or_above, axis=0)
        tp = np.take(cum_pos, self.pos_at_or_above, axis=0)
        beaten = above
        beaten += at_or_above
        beaten *= -0.5
        beaten += n_neg
        predicted = tp + at_or_above
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.einsum("ib,ib->b", pos_counts, beaten) / (n_pos * n_neg)
            ap = np.einsum("ib,ib->b", pos_counts, precision) / n_pos
        # negatives (descending) that fit in the budget; the next one sets the threshold
        within = np.count_nonzero(cum_neg[1:] <= max_fp, axis=0)
        tp_budget = cum_pos[self.pos_above_neg[within], np.arange(cum_pos.shape[1])]
        return BatchMetrics(
            roc_auc=auc, average_precision=ap, negatives_within=within, true_positives=tp_budget
        )

    def threshold_above_negatives(self, within: int) -> float:
        """The lowest threshold that leaves negative number ``within`` (descending) uncalled.

        That is the lowest observed score above that negative's score; ``within == n``
        (every negative may be called): the lowest score of all; no observed score above
        it: the next float above the highest score (nothing is called positive).
        """
        if within >= self.neg_scores_desc.shape[0]:
            return float(self.distinct_scores[0])
        x = self.neg_scores_desc[within]
        i = int(np.searchsorted(self.distinct_scores, x, side="right"))
        if i == self.distinct_scores.shape[0]:
            return float(np.nextafter(self.distinct_scores[-1], np.inf))
        return float(self.distinct_scores[i])


# --- public, single-evaluation metrics ---------------------------------------------------------


def _prepare(
    y_true: Any, scores: Any, sample_weight: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    positive = as_labels(y_true, name="y_true")
    s = as_scores(scores, positive.shape[0], name="scores")
    if sample_weight is None:
        w = np.ones(positive.shape[0], dtype=np.float64)
    else:
        w = as_count_weights(sample_weight, positive.shape[0])
    return positive, s, w


def _indexed(
    y_true: Any, scores: Any, sample_weight: Any, metric: str
) -> tuple[RankIndex, np.ndarray, np.ndarray]:
    positive, s, w = _prepare(y_true, scores, sample_weight)
    pos_w = w[positive]
    neg_w = w[~positive]
    if pos_w.sum() <= 0:
        raise StatsInputError(None, f"{metric} is undefined: there is no positive tile")
    if neg_w.sum() <= 0:
        raise StatsInputError(None, f"{metric} is undefined: there is no negative tile")
    return RankIndex.of(positive, s), pos_w[:, None], neg_w[:, None]


def roc_auc(y_true: Any, scores: Any, sample_weight: Any = None) -> float:
    """ROC AUC, ties counted one half; ``sample_weight`` are integer counts per tile."""
    index, pos_w, neg_w = _indexed(y_true, scores, sample_weight, "ROC AUC")
    return float(index.metrics(pos_w, neg_w, np.zeros(1)).roc_auc[0])


def average_precision(y_true: Any, scores: Any, sample_weight: Any = None) -> float:
    """Average precision (PR AUC, step-wise as scikit-learn); integer count weights.

    Needs at least one negative too (a test set without negatives is not a test set).
    """
    index, pos_w, neg_w = _indexed(y_true, scores, sample_weight, "average precision")
    return float(index.metrics(pos_w, neg_w, np.zeros(1)).average_precision[0])


def threshold_for_specificity(
    y_true: Any, scores: Any, specificity: float, sample_weight: Any = None
) -> float:
    """The lowest observed score ``t`` with ``specificity(t) >= specificity`` (see module)."""
    target = check_fraction(specificity, "specificity")
    index, _, neg_w = _indexed(y_true, scores, sample_weight, "specificity")
    cum_neg = np.cumsum(neg_w[index.neg_order, 0])
    n_neg = float(cum_neg[-1])
    # specificity once the first j+1 negatives (descending) are called positive: non-increasing
    within = int(np.count_nonzero((n_neg - cum_neg) / n_neg >= target))
    return index.threshold_above_negatives(within)


def sensitivity_at_specificity(
    y_true: Any, scores: Any, specificity: float, sample_weight: Any = None
) -> float:
    """Sensitivity at :func:`threshold_for_specificity` (predictions ``score >= t``)."""
    t = threshold_for_specificity(y_true, scores, specificity, sample_weight)
    return operating_point(y_true, scores, t, sample_weight).sensitivity


@dataclass(frozen=True)
class OperatingPoint:
    """Confusion counts of ``score >= threshold`` and the rates derived from them."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.tn + self.fp

    @property
    def sensitivity(self) -> float:
        """TP / positives (recall); NaN without positives."""
        return self.tp / self.positives if self.positives else math.nan

    @property
    def specificity(self) -> float:
        """TN / negatives; NaN without negatives."""
        return self.tn / self.negatives if self.negatives else math.nan

    @property
    def precision(self) -> float:
        """TP / predicted positives; NaN when nothing is predicted positive."""
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else math.nan

    def intervals(self, confidence: float = 0.95) -> dict[str, Interval]:
        """Wilson intervals of sensitivity (recall), specificity and precision."""
        return {
            "sensitivity": wilson_interval(self.tp, self.positives, confidence),
            "specificity": wilson_interval(self.tn, self.negatives, confidence),
            "precision": wilson_interval(self.tp, self.tp + self.fp, confidence),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: counts, rates (``None`` when undefined)."""
        return {
            "threshold": json_number(self.threshold),
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "sensitivity": json_number(self.sensitivity),
            "specificity": json_number(self.specificity),
            "precision": json_number(self.precision),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperatingPoint:
        """Inverse of :meth:`to_dict` (the rates are recomputed from the counts)."""
        threshold = data["threshold"]
        return cls(
            threshold=math.nan if threshold is None else float(threshold),
            tp=int(data["tp"]),
            fp=int(data["fp"]),
            tn=int(data["tn"]),
            fn=int(data["fn"]),
        )


def operating_point(
    y_true: Any, scores: Any, threshold: float, sample_weight: Any = None
) -> OperatingPoint:
    """Counts and rates of the decision ``score >= threshold`` (integer count weights)."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise StatsInputError(None, f"threshold must be a number, got {threshold!r}") from None
    if math.isnan(t):
        raise StatsInputError(None, "threshold is NaN; a decision threshold must be a number")
    positive, s, w = _prepare(y_true, scores, sample_weight)
    called = s >= t
    tp = int(round(float(w[positive & called].sum())))
    fp = int(round(float(w[~positive & called].sum())))
    fn = int(round(float(w[positive & ~called].sum())))
    tn = int(round(float(w[~positive & ~called].sum())))
    return OperatingPoint(threshold=t, tp=tp, fp=fp, tn=tn, fn=fn)
