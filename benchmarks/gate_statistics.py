"""Benchmark: the paired gate statistics on SYNTHETIC scores, against baselines in the same run.

Scores of two correlated models on ``--tiles`` SYNTHETIC test tiles (default 10,000, ~14%
positive), then, all in this process:

- ``compare_paired``: the whole gate statistic (ΔROC AUC, ΔPR AUC, Δsensitivity at the
  reference's specificity, each with a paired stratified bootstrap of ``--resamples``
  resamples, plus DeLong); median of ``--repeats`` runs after one warm-up. Aim: < 5 s for
  10,000 tiles x 1,000 resamples on 2 cores.
- ``sklearn pair x 2 x R``: one scikit-learn ``roc_auc_score`` + ``average_precision_score``
  call pair on all tiles, timed, times 2 models x R resamples: the least a bootstrap built
  on scikit-learn would spend, without resampling or the matched operating point.
- ``naive loop``: a plain bootstrap loop (stratified index resampling, scikit-learn ROC AUC
  + AP + ``roc_curve`` for the matched sensitivity, both models) run on ``--naive``
  resamples and extrapolated to R.

It prints absolute seconds (wall clock, and the process CPU time of ``compare_paired``,
which is less sensitive to other work on a shared machine; the load average is printed)
and the ratios baseline / compare_paired, and checks that the point estimates equal
scikit-learn's.

    python benchmarks/gate_statistics.py
    python benchmarks/gate_statistics.py --tiles 2000 --resamples 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mammo_pipeline.stats import compare_paired


def synthetic_scores(n: int, prevalence: float, seed: int) -> tuple[np.ndarray, ...]:
    """SYNTHETIC labels and two correlated models' probabilities (float32, as Keras gives)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    shared = rng.standard_normal(n)
    ref_logit = 1.6 * y + 0.8 * shared + 0.6 * rng.standard_normal(n) - 1.5
    cand_logit = 1.7 * y + 0.8 * shared + 0.6 * rng.standard_normal(n) - 1.5
    sigmoid = lambda z: (1.0 / (1.0 + np.exp(-z))).astype(np.float32)  # noqa: E731
    return y, sigmoid(cand_logit), sigmoid(ref_logit)


def naive_bootstrap(y, cand, ref, threshold: float, resamples: int, seed: int) -> np.ndarray:
    """The straightforward loop the vectorised code replaces (same statistic)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = np.empty((3, resamples))
    for b in range(resamples):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        yb, cb, rb = y[idx], cand[idx], ref[idx]
        fp_budget = np.count_nonzero((rb >= threshold) & (yb == 0))
        target_fpr = fp_budget / neg.size
        sens = []
        for s in (cb, rb):
            fpr, tpr, _ = roc_curve(yb, s, drop_intermediate=False)
            sens.append(tpr[fpr <= target_fpr + 1e-12].max())
        out[0, b] = roc_auc_score(yb, cb) - roc_auc_score(yb, rb)
        out[1, b] = average_precision_score(yb, cb) - average_precision_score(yb, rb)
        out[2, b] = sens[0] - sens[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10_000)
    parser.add_argument("--prevalence", type=float, default=0.14)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", type=int, default=30, help="resamples run by the naive loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    y, cand, ref = synthetic_scores(args.tiles, args.prevalence, args.seed)
    threshold = float(np.quantile(ref[y == 0], 0.85))  # reference at ~85% specificity
    print(
        f"SYNTHETIC scores: {args.tiles} tiles, {int(y.sum())} positive, "
        f"{args.resamples} resamples; cpus visible: {os.cpu_count()}, "
        f"usable: {len(os.sched_getaffinity(0))}"
    )

    def run():
        return compare_paired(
            y, cand, ref, reference_threshold=threshold, n_resamples=args.resamples,
            seed=args.seed, synthetic=True,
        )  # fmt: skip

    result = run()  # warm-up
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ours = statistics.median(times)

    checks = {
        "roc_auc": (result.roc_auc, roc_auc_score),
        "pr_auc": (result.pr_auc, average_precision_score),
    }
    for name, (delta, sk) in checks.items():
        for got, scores in ((delta.candidate, cand), (delta.reference, ref)):
            want = sk(y, scores)
            assert abs(got - want) < 1e-12, f"{name}: {got} != scikit-learn {want}"

    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        roc_auc_score(y, cand)
        average_precision_score(y, cand)
    pair = (time.perf_counter() - t0) / reps
    sklearn_floor = pair * 2 * args.resamples

    t0 = time.perf_counter()
    naive = naive_bootstrap(y, cand, ref, threshold, args.naive, args.seed)
    naive_total = (time.perf_counter() - t0) / args.naive * args.resamples
    assert np.isfinite(naive).all()

    print(result.describe())
    print(
        f"compare_paired            : {ours:8.3f} s  (median of {args.repeats}: "
        + ", ".join(f"{t:.3f}" for t in times)
        + f"; CPU time {statistics.median(cpu):.3f} s, load average {os.getloadavg()[0]:.1f})"
    )
    print(
        f"sklearn pair x 2 x {args.resamples:<6}: {sklearn_floor:8.3f} s  "
        f"({pair * 1e3:.2f} ms per roc_auc + AP pair)  ratio {sklearn_floor / ours:6.1f}x"
    )
    print(
        f"naive loop (extrapolated) : {naive_total:8.3f} s  (from {args.naive} resamples)  "
        f"ratio {naive_total / ours:6.1f}x"
    )
    verdict = "meets" if ours < 5.0 else "MISSES"
    print(f"aim < 5 s for the gate: {verdict} ({ours:.3f} s)")


if __name__ == "__main__":
    main()
