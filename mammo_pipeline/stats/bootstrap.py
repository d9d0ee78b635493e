"""Stratified bootstrap resamples as integer count weights, generated in bounded chunks.

Owns how resamples are drawn. A resample draws ``m`` positives with replacement from the
``m`` positive tiles and ``n`` negatives from the ``n`` negative tiles (stratified: every
resample keeps the class sizes of the test set), and is represented by how many times each
tile was drawn (multinomial counts), not by a list of indices. Paired: the same counts
weight the candidate's and the reference's score of a tile.

Reproducible: positives and negatives have their own generators spawned from
``numpy.random.SeedSequence(seed)`` and each resample consumes a fixed number of draws, so
resample ``b`` is the same whatever the chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Count-matrix cells per chunk: bounds memory to a few (tiles x chunk) float64 arrays of
#: 4 MB each (10,000 tiles x 50 resamples), whatever the number of tiles.
CHUNK_CELLS = 500_000


def auto_chunk(n_tiles: int, n_resamples: int) -> int:
    """Resamples per chunk for ``n_tiles`` tiles: ``CHUNK_CELLS // n_tiles``, at least 1."""
    return max(1, min(n_resamples, CHUNK_CELLS // max(n_tiles, 1)))


def _counts(rng: np.random.Generator, resamples: int, size: int) -> np.ndarray:
    """``(size, resamples)`` counts: column b = how often each of ``size`` items is drawn
    when resample b draws ``size`` items with replacement."""
    draws = rng.integers(0, size, size=(resamples, size), dtype=np.int64)
    draws *= resamples
    draws += np.arange(resamples, dtype=np.int64)[:, None]
    return np.bincount(draws.ravel(), minlength=size * resamples).reshape(size, resamples)


def stratified_count_chunks(
    n_positive: int,
    n_negative: int,
    n_resamples: int,
    seed: int,
    chunk: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positive_counts, negative_counts)``: ``(m, b)`` and ``(n, b)`` float64 arrays.

    Tile-major: one row per tile, one column per resample; each column sums to ``m``
    (resp. ``n``); ``b <= chunk``; ``n_resamples`` columns in total.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    pos_seq, neg_seq = np.random.SeedSequence(seed).spawn(2)
    rng_pos = np.random.default_rng(pos_seq)
    rng_neg = np.random.default_rng(neg_seq)
    for start in range(0, n_resamples, chunk):
        columns = min(chunk, n_resamples - start)
        pos = _counts(rng_pos, columns, n_positive).astype(np.float64)
        neg = _counts(rng_neg, columns, n_negative).astype(np.float64)
        yield pos, neg
