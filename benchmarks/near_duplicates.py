"""Benchmark: near-duplicate hashing, threshold choice, grouping at scale, split leakage,
and the held-out-test guard.

All tiles are SYNTHETIC (``mammo_pipeline.data.synthetic``); every figure says so. Five parts,
each with a baseline measured in the same run:

1. **throughput**: perceptual hashes per second vs sha256 of the same tiles' bytes;
2. **threshold**: distances between views of one lesion (overlapping crops shifted by up to
   20 % of a tile, each under a random flip/rotation; exact crops and with per-view
   perturbations: sensor noise, contrast/brightness, a half-pixel resampling) and between
   distinct tiles (distinct lesions; negatives). Per threshold: lesions whose views do NOT
   all join one group, and false joins between distinct tiles;
3. **scale**: grouping 56,000 tiles' hashes (random hashes with planted near-copies), vs
   grouping their exact content digests (sort + unique) as the baseline;
4. **leakage**: validation positives with a near-copy in train, old per-tile rule vs the
   group split, on a generated multi-view data set;
5. **guard**: the held-out-test guard (``validation.test_guard``): per kind of altered view
   of a test tile, the share caught and traced to its tile by the anchored hash alone (the
   old guard), by the ring spectra alone and by the guard (either); false joins among
   distinct tiles (each against all the others); time per record of each descriptor
   (computing it and searching an index of the distinct tiles).

    python benchmarks/near_duplicates.py                # defaults: a few minutes
    python benchmarks/near_duplicates.py --lesions 600 --negatives 2400 --leak-n 4000
    python benchmarks/near_duplicates.py --only guard --guard-distinct 10000   # ~5 min
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mammo_pipeline.data import near_duplicates as nd
from mammo_pipeline.data import ring_descriptors as rd
from mammo_pipeline.data.synthetic import dihedral, make_lesion_views, make_tile
from mammo_pipeline.data.tile_views import add_noise, invert, jpeg, rotate_scale

TAG = "SYNTHETIC"
VIEWS = 4
THRESHOLDS = (4, 6, 7, 8, 10, 12, 14, 16, 20)


def _perturb(views: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    if mode == "exact":
        return views
    f = views.astype(np.float64)
    if mode == "noise":  # independent sensor noise per view
        f = f + rng.normal(0.0, 2.0, f.shape)
    elif mode == "contrast":  # +-7 % contrast, +-8 grey levels
        mean = f.mean(axis=(1, 2), keepdims=True)
        gain = rng.uniform(0.93, 1.07, (len(f), 1, 1))
        f = (f - mean) * gain + mean + rng.uniform(-8, 8, (len(f), 1, 1))
    elif mode == "resample":  # a half-pixel shift (linear interpolation) along one axis
        axis = int(rng.integers(1, 3))
        f = 0.5 * (f + np.roll(f, 1, axis=axis))
    else:
        raise ValueError(mode)
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


def _views(seed: int, lesions: int) -> np.ndarray:
    return np.concatenate(
        [make_lesion_views(seed, "train", k, k % 4 + 1, VIEWS) for k in range(lesions)]
    )


def throughput(tiles: np.ndarray) -> None:
    t0 = time.perf_counter()
    nd.perceptual_hashes(tiles)
    t_hash = time.perf_counter() - t0
    t0 = time.perf_counter()
    for tile in tiles:
        hashlib.sha256(tile.tobytes()).digest()
    t_sha = time.perf_counter() - t0
    n = len(tiles)
    print(f"[{TAG}] throughput on {n} tiles:")
    print(f"  perceptual hash : {n / t_hash:8.0f} tiles/s")
    print(f"  sha256 (baseline): {n / t_sha:8.0f} tiles/s")
    print(f"  ratio hash time / sha256 time: {t_hash / t_sha:.1f}x")


def _split_lesions(hashes: np.ndarray, lesions: int, t: int) -> int:
    pairs = nd.close_pairs(hashes, None, t)
    groups = nd.union_find_groups(len(hashes), pairs.left, pairs.right)
    per_lesion = groups.reshape(lesions, VIEWS)
    return int((per_lesion != per_lesion[:, :1]).any(axis=1).sum())


def _false_joins(hashes: np.ndarray, owner: np.ndarray, t: int) -> int:
    pairs = nd.close_pairs(hashes, None, t)
    return int((owner[pairs.left] != owner[pairs.right]).sum())


def threshold_study(seed: int, lesions: int, negatives: np.ndarray) -> None:
    rng = np.random.default_rng(seed)
    views = _views(seed, lesions)
    h_neg = nd.perceptual_hashes(negatives)
    owner_views = np.repeat(np.arange(lesions), VIEWS)
    print(
        f"[{TAG}] threshold study: {lesions} lesions x {VIEWS} views (crops shifted by up to "
        f"20 % of a tile + random flip/rotation) and {len(negatives)} negative tiles"
    )
    exact = nd.perceptual_hashes(views)
    d_neg = nd.pairwise_distances(h_neg, h_neg)[np.triu_indices(len(h_neg), 1)]
    d_pos = nd.pairwise_distances(exact, exact)
    distinct = d_pos[owner_views[:, None] != owner_views[None, :]]
    same = d_pos[(owner_views[:, None] == owner_views[None, :]) & ~np.eye(len(exact), dtype=bool)]
    print(
        f"  closest distinct lesions: {distinct.min()} bits; closest distinct negatives: "
        f"{d_neg.min()} bits (of {nd.HASH_BITS}); views of one lesion: median "
        f"{np.median(same):.0f}, 95th percentile {np.percentile(same, 95):.0f} bits"
    )
    header = "  threshold t            " + "".join(f"{t:>7}" for t in THRESHOLDS)
    print(header)
    for mode in ("exact", "noise", "contrast", "resample"):
        hashes = exact if mode == "exact" else nd.perceptual_hashes(_perturb(views, mode, rng))
        row = [_split_lesions(hashes, lesions, t) for t in THRESHOLDS]
        print(f"  lesions split ({mode:8s}) " + "".join(f"{v:>7}" for v in row))
    row = [_false_joins(exact, owner_views, t) for t in THRESHOLDS]
    print("  false joins, lesions    " + "".join(f"{v:>7}" for v in row))
    owner_neg = np.arange(len(negatives))
    row = [_false_joins(h_neg, owner_neg, t) for t in THRESHOLDS]
    print("  false joins, negatives  " + "".join(f"{v:>7}" for v in row))
    print(f"  default threshold: {nd.DEFAULT_MAX_DISTANCE}")


def _random_hashes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Random tile hashes where every 4th tile is a near-copy (3 bits flipped per word, 6
    per anchor) of its neighbour; returns (hashes, number of copies)."""
    words = rng.integers(0, 1 << 62, (n, nd.ANCHORS, nd.HASH_WORDS), dtype=np.uint64)
    words = words * np.uint64(4) + rng.integers(0, 4, words.shape, dtype=np.uint64)
    copies = np.arange(1, n, 4)
    noise = np.zeros((copies.size, nd.ANCHORS, nd.HASH_WORDS), np.uint64)
    for _ in range(3):
        noise |= np.uint64(1) << rng.integers(0, 64, noise.shape).astype(np.uint64)
    words[copies] = words[copies - 1] ^ noise
    return nd.sort_anchors(words), int(copies.size)


def scale(n: int, seed: int, small: int) -> None:
    rng = np.random.default_rng(seed)
    hashes, copies = _random_hashes(n, rng)
    t0 = time.perf_counter()
    pairs = nd.close_pairs(hashes, None, nd.DEFAULT_MAX_DISTANCE)
    t_pairs = time.perf_counter() - t0
    t0 = time.perf_counter()
    groups = nd.union_find_groups(n, pairs.left, pairs.right)
    t_uf = time.perf_counter() - t0
    digests = np.array([hashlib.sha256(w.tobytes()).digest() for w in hashes])
    t0 = time.perf_counter()
    np.unique(digests, return_inverse=True)
    t_exact = time.perf_counter() - t0
    found = int(np.unique(groups).size)
    print(f"[{TAG}] scale: {n} tiles (random hashes, {copies} planted near-copies):")
    print(f"  near-duplicate pairs: {t_pairs:7.2f} s ({len(pairs)} pairs)")
    print(f"  union-find          : {t_uf:7.2f} s ({found} groups, expected {n - copies})")
    print(f"  exact-digest grouping (baseline): {t_exact:.3f} s")
    print(f"  ratio: {(t_pairs + t_uf) / max(t_exact, 1e-9):.0f}x")
    sub, _ = _random_hashes(small, rng)
    t0 = time.perf_counter()
    fast = nd.close_pairs(sub, None, nd.DEFAULT_MAX_DISTANCE)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = nd.close_pairs(sub, None, nd.DEFAULT_MAX_DISTANCE, exhaustive=True)
    t_full = time.perf_counter() - t0
    print(
        f"  exhaustive search on {small} tiles: {t_full:.2f} s vs {t_fast:.2f} s "
        f"({t_full / t_fast:.0f}x), pairs {len(full)} vs {len(fast)}"
    )


def leakage(n: int, files: int, seed: int, val_fraction: float) -> None:
    from mammo_pipeline.data import grouped_split as gs
    from mammo_pipeline.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        ds = generate(Path(tmp), n, files=files, positive_fraction=0.25, seed=seed, progress=False)
        t0 = time.perf_counter()
        corpus = gs.hash_files(ds.train_files, progress=False)
        old = gs.legacy_leakage(ds.train_files, val_fraction, corpus=corpus)
        split = gs.assign_validation(ds.train_files, val_fraction, seed, progress=False)
        elapsed = time.perf_counter() - t0
    new = gs.group_leakage_report(split)
    print(
        f"[{TAG}] leakage: {n} records in {files} files, {ds.train_lesions} lesions x up to "
        f"{ds.views_per_lesion} views, val_fraction {val_fraction}"
    )
    for r in (old, new):
        share = r.leakage / max(r.validation_positives, 1)
        print(
            f"  {r.rule:28s}: {r.validation_records:5d} validation records, "
            f"{r.validation_positives:4d} positives, leaked {r.leakage:4d} ({share:.0%})"
        )
    print(f"  (groups: {split.groups}; measured in {elapsed:.1f} s)")


def _guard_views(tiles: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Altered copies of each tile, by kind (shifts, flips, noise and JPEG were caught before
    issue #18; the rotations, rescales and inversion were not)."""
    rng = np.random.default_rng(seed)
    n = len(tiles)
    angle = rng.uniform(0, 360, n)
    small = rng.uniform(5, 45, n)
    scale = np.exp(rng.uniform(np.log(0.8), np.log(1.25), n))
    shift = rng.integers(-16, 17, (n, 2))
    direction = rng.uniform(0, 2 * np.pi, n)

    def each(f) -> np.ndarray:
        return np.stack([f(i, t) for i, t in enumerate(tiles)])

    return {
        "flipped / quarter-turned": each(lambda i, t: dihedral(t, 1 + i % 7)),
        "shifted <= 16 px": each(lambda i, t: rotate_scale(t, shift=tuple(shift[i]))),
        "noise sigma 4": each(lambda i, t: add_noise(t, rng)),
        "JPEG q 60-90": each(lambda i, t: jpeg(t, int(rng.integers(60, 91)))),
        "rotated 5-45 deg": each(lambda i, t: rotate_scale(t, small[i])),
        "rotated any angle": each(lambda i, t: rotate_scale(t, angle[i])),
        "rotated, black corners": each(lambda i, t: rotate_scale(t, angle[i], fill="constant")),
        "rescaled 0.9": each(lambda i, t: rotate_scale(t, scale=0.9)),
        "rescaled 1.15": each(lambda i, t: rotate_scale(t, scale=1.15)),
        "rescaled 0.8": each(lambda i, t: rotate_scale(t, scale=0.8)),
        "rescaled 1.25": each(lambda i, t: rotate_scale(t, scale=1.25)),
        "rescaled 0.8-1.25": each(lambda i, t: rotate_scale(t, scale=scale[i])),
        "inverted": each(lambda i, t: invert(t)),
        "all at once": each(
            lambda i, t: jpeg(
                add_noise(
                    invert(rotate_scale(t, angle[i], scale[i], (2 * np.cos(i), 2 * np.sin(i)))),
                    rng,
                    3.0,
                ),
                80,
            )
        ),
        "rotated + shifted 4 px": each(
            lambda i, t: rotate_scale(
                t, angle[i], shift=(4 * np.cos(direction[i]), 4 * np.sin(direction[i]))
            )
        ),
    }


def _distinct_tiles(n: int, seed: int) -> np.ndarray:
    return np.stack([make_tile(seed + i, "train", i, i % 5) for i in range(n)])


def guard(seed: int, n: int, distinct: int) -> None:
    """Catch rates per kind of view, false joins and time per record (module docstring)."""
    test = _distinct_tiles(n, 10_000 + seed)
    lesions = max(n // 4, 1)
    views = np.stack([make_lesion_views(seed, "test", k, k % 4 + 1, 2) for k in range(lesions)])
    index_tiles = np.concatenate([test, views[:, 0]])
    hashes = nd.perceptual_hashes(index_tiles)
    rings = rd.RingIndex(rd.ring_spectra(index_tiles, index=True))
    kinds = _guard_views(test, seed)
    kinds["shifted crop (lesion view)"] = views[:, 1]
    print(
        f"[{TAG}] held-out-test guard: {n} test tiles (+ {lesions} lesion views), share of "
        f"altered copies caught and traced to their tile; hash threshold "
        f"{nd.DEFAULT_MAX_DISTANCE} bits, ring correlation >= {rd.DEFAULT_MIN_SIMILARITY}"
    )
    print(
        f"  {'view':28s} {'hash (old)':>11} {'rings':>8} {'guard':>8}   ring correlation, min / 5%"
    )
    for kind, queries in kinds.items():
        truth = np.arange(len(queries)) + (n if kind.startswith("shifted crop") else 0)
        pairs = nd.close_pairs(nd.perceptual_hashes(queries), hashes, nd.DEFAULT_MAX_DISTANCE)
        by_hash = np.zeros(len(queries), dtype=bool)
        by_hash[pairs.left[pairs.right == truth[pairs.left]]] = True
        best, score = rings.match(rd.ring_spectra(queries))
        by_rings = (best == truth) & (score >= rd.DEFAULT_MIN_SIMILARITY)
        own = np.where(best == truth, score, 0.0)
        print(
            f"  {kind:28s} {by_hash.mean():11.1%} {by_rings.mean():8.1%} "
            f"{(by_hash | by_rings).mean():8.1%}   {own.min():.2f} / {np.quantile(own, 0.05):.2f}"
        )
    _guard_false_joins_and_cost(seed, distinct)


def _guard_false_joins_and_cost(seed: int, n: int) -> None:
    t0 = time.perf_counter()
    tiles = _distinct_tiles(n, 50_000 + seed)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    hashes = nd.perceptual_hashes(tiles)
    t_hash = time.perf_counter() - t0
    t0 = time.perf_counter()
    spectra = rd.ring_spectra(tiles)
    t_rings = time.perf_counter() - t0
    index = rd.RingIndex(rd.ring_spectra(tiles, index=True))
    index.windows()
    t0 = time.perf_counter()
    pairs = nd.close_pairs(hashes, None, nd.DEFAULT_MAX_DISTANCE)
    t_hash_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, score = index.match(spectra, skip=np.arange(n))
    t_ring_search = time.perf_counter() - t0
    joined_hash = np.zeros(n, dtype=bool)
    joined_hash[pairs.left] = joined_hash[pairs.right] = True
    joined_rings = score >= rd.DEFAULT_MIN_SIMILARITY
    either = joined_hash | joined_rings
    over = ", ".join(f">= {t}: {int((score >= t).sum())}" for t in (0.45, 0.5, 0.55, 0.6))
    print(
        f"[{TAG}] false joins among {n} distinct tiles (each against the other {n - 1}; "
        f"{made:.0f} s to make them): hash {int(joined_hash.sum())}, rings "
        f"{int(joined_rings.sum())}, guard {int(either.sum())} tiles ({either.mean():.3%}); "
        f"highest ring correlation between distinct tiles {score.max():.3f} "
        f"(99.9th percentile {np.quantile(score, 0.999):.3f}; tiles {over})"
    )
    ms = 1e3 / n
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"  time per record, index of {n} tiles (load average {load}, wall time):")
    print(f"    anchored hash (old): {t_hash * ms:.3f} ms + search {t_hash_search * ms:.3f} ms")
    print(f"    ring spectra (new) : {t_rings * ms:.3f} ms + search {t_ring_search * ms:.3f} ms")
    total_old = t_hash + t_hash_search
    print(f"    guard / old hash   : {(total_old + t_rings + t_ring_search) / total_old:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lesions", type=int, default=150)
    ap.add_argument("--negatives", type=int, default=600)
    ap.add_argument("--scale", type=int, default=56_000)
    ap.add_argument("--scale-exhaustive", type=int, default=8_000)
    ap.add_argument("--leak-n", type=int, default=2000)
    ap.add_argument("--leak-files", type=int, default=4)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--guard-n", type=int, default=200, help="test tiles per kind of view")
    ap.add_argument("--guard-distinct", type=int, default=2000, help="tiles for false joins")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip")
    ap.add_argument("--only", nargs="*", default=None, help="parts to run (default: all)")
    args = ap.parse_args(argv)
    if args.only is not None:
        parts = {"throughput", "threshold", "scale", "leakage", "guard"}
        args.skip = sorted(parts - set(args.only))
    negatives = np.stack([make_tile(args.seed, "train", i, 0) for i in range(args.negatives)])
    # Keep the exact-invariance promise visible in every run.
    h = nd.perceptual_hashes(negatives[:8])
    for k in range(8):
        assert np.array_equal(
            h, nd.perceptual_hashes(np.stack([dihedral(t, k) for t in negatives[:8]]))
        )
    if "throughput" not in args.skip:
        throughput(negatives)
    if "threshold" not in args.skip:
        threshold_study(args.seed, args.lesions, negatives)
    if "scale" not in args.skip:
        scale(args.scale, args.seed, args.scale_exhaustive)
    if "leakage" not in args.skip:
        leakage(args.leak_n, args.leak_files, args.seed, 0.15)
    if "guard" not in args.skip:
        guard(args.seed, args.guard_n, args.guard_distinct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
