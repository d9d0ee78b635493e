"""Flip/rotation-invariant perceptual hashes of 299x299 tiles, near-duplicate search, groups.

Why not a plain pHash of the whole tile: views of one lesion region are crops shifted by up
to ~20 % of a tile, which scrambles the signs of all but the lowest DCT coefficients of the
whole tile (measured: most 8x8 low-frequency signs agree only 55-70 % of the time between
two such views, so near-copies and distinct tiles overlap). The hash therefore anchors on
the *content* first:

1. **Anchors.** A difference-of-boxes blob detector (9 px box minus 33 px box, exact
   integer sums from an integral image) is evaluated over the pixels that can centre a
   129 x 129 window inside the tile (every 3rd pixel, then refined to the best pixel
   around the chosen one); the ``ANCHORS`` = 3 strongest peaks (non-maximum suppression over
   31 x 31 px) are kept. A crop moves its anchors *with* the content, so two views of a
   region usually share an anchor at the same content pixel.
2. **Window DCT.** The 129 x 129 window around each anchor is projected onto the 12 x 12
   lowest DCT-II basis functions (integer-valued weights, exact float64 arithmetic), and
   the signs of 128 coefficients (the DC term and 15 highest cells dropped) give 128 bits.
3. **Dihedral invariance, exactly.** Flipping the window negates the odd-frequency
   coefficients and transposing it transposes the coefficient matrix; as the arithmetic is
   exact, the 8 flips/rotations of a tile give exactly these 8 signed permutations of its
   coefficients. Each anchor's hash is the smallest of its 8 variants (lexicographic over
   two uint64 words), and a tile's hashes are its anchors' hashes in sorted order, so the
   8 transforms of a tile give bit-identical hashes (provided its detector peaks are unique:
   a tie needs exactly equal integer box sums, as on flat tiles, which the contract rejects).

The distance between two tiles is the smallest Hamming distance between any anchor hash of
one and any of the 8 variants of any anchor hash of the other (variants are signed bit
permutations, so this distance is symmetric). Two tiles are near-duplicates when it is at
most ``DEFAULT_MAX_DISTANCE`` = 14, chosen by measurement (``benchmarks/near_duplicates.py``,
SYNTHETIC data, 600 lesions x 4 views and 2,400 negatives): views of one lesion (crops
shifted by up to 60 px, flipped/rotated) are at median distance 0; with per-view sensor
noise, contrast changes or half-pixel resampling every lesion's views still join into one
group from a threshold of 12; distinct tiles (lesions, negatives) were never closer than 29
bits, and no distinct pair joined at any threshold up to 20.

Search scales by multi-index hashing: only hashes that share the value of one of their eight
16-bit chunks are compared in full (``np.bitwise_count``); by pigeonhole this finds every pair
within 7 bits, and a farther pair whenever its differing bits spare one chunk
(:func:`close_pairs`, which can also search exhaustively). Groups are the connected
components (union-find) of the near-duplicate relation.

Longer than 400 lines because the hash (anchors, descriptors, dihedral canonical form)
and the neighbour search over it are tuned together; splitting them would separate each
constant from the measurement that chose it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_pipeline.data.example_codec import ExampleDecodeError, decode_tile
from mammo_pipeline.data.schema import IMAGE_BYTES, SOURCE_SIZE
from mammo_pipeline.data.tfrecord_io import iter_records
from mammo_pipeline.errors import DataError

S = SOURCE_SIZE
#: Anchors (window hashes) per tile.
ANCHORS = 3
#: Half side of the hashed window (129 x 129 px, ~13 mm at 0.1 mm per pixel).
WINDOW_HALF = 64
#: Box radii of the blob detector: a 9 x 9 box minus a 33 x 33 box (means).
_INNER, _OUTER = 4, 16
#: Non-maximum suppression half side between anchors (pixels).
_SUPPRESS = 15
#: DCT frequencies per axis in the coefficient pool.
_FREQS = 12
HASH_BITS = 128
HASH_WORDS = HASH_BITS // 64
#: Near-duplicate threshold on the 128-bit distance (see the module docstring / benchmark).
DEFAULT_MAX_DISTANCE = 14
#: Bumped whenever hashes change meaning; caches of hashes are keyed by it.
HASH_VERSION = "anchored-dct128-a3-w129-v2"

#: Window positions (top-left = anchor - WINDOW_HALF) range over 0.._POSITIONS-1.
_POSITIONS = S - 2 * WINDOW_HALF
_DROPPED = {(11, 11), (10, 11), (11, 10), (9, 11), (11, 9), (10, 10), (8, 11), (11, 8)}
_DROPPED |= {(9, 10), (10, 9), (7, 11), (11, 7), (8, 10), (10, 8), (9, 9)}
#: The 128 coefficient cells hashed, lowest frequencies first (most significant bit first);
#: the set is closed under transposition, so every dihedral variant uses the same cells.
CELLS: tuple[tuple[int, int], ...] = tuple(
    sorted(
        (
            (u, v)
            for u in range(_FREQS)
            for v in range(_FREQS)
            if (u, v) != (0, 0) and (u, v) not in _DROPPED
        ),
        key=lambda c: (c[0] + c[1], max(c), c),
    )
)
assert len(CELLS) == HASH_BITS


def _dct_weights() -> np.ndarray:
    """The 12 lowest DCT-II basis rows on the window, scaled by 4096 and rounded to integers
    (exactly (anti)symmetric, so flips negate odd rows exactly)."""
    n = 2 * WINDOW_HALF + 1
    u = np.arange(_FREQS)[:, None]
    j = np.arange(n)[None, :]
    return np.round(4096.0 * np.cos(np.pi * u * (j + 0.5) / n))


_DCT = _dct_weights()
#: ``_DCT`` split as 64 * high + low (|high| <= 64, |low| <= 32), stacked (24, 129) float32:
#: each part times a uint8 window sums integers below 64 * 255 * 129 < 2^24, so float32
#: products are exact and about twice as fast as the float64 product they replace.
_DCT_HIGH = np.round(_DCT / 64.0)
_DCT_SPLIT = np.concatenate([_DCT_HIGH, _DCT - 64.0 * _DCT_HIGH]).astype(np.float32)
assert np.abs(_DCT_SPLIT).max() <= 64 and np.abs(_DCT_SPLIT[_FREQS:]).max() <= 32
_CELL_U = np.array([c[0] for c in CELLS])
_CELL_V = np.array([c[1] for c in CELLS])


def transform_coefficients(coeffs: np.ndarray, k: int) -> np.ndarray:
    """The coefficients of ``dihedral(window, k)`` from those of ``window`` (last two axes):
    ``k % 4`` quarter turns (each: transpose, then negate odd rows), then a transpose when
    ``k >= 4``; matches :func:`mammo_pipeline.data.synthetic.dihedral` on the pixels."""
    sign = (-1.0) ** np.arange(coeffs.shape[-1])
    out = coeffs
    for _ in range(k % 4):
        out = sign[:, None] * np.swapaxes(out, -1, -2)
    return np.swapaxes(out, -1, -2) if k >= 4 else out


def _pack(bits: np.ndarray) -> np.ndarray:
    """(..., 128) bool, most significant first -> (..., 2) uint64."""
    packed = np.packbits(bits, axis=-1, bitorder="big")
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


def _unpack(words: np.ndarray) -> np.ndarray:
    """(..., 2) uint64 -> (..., 128) bool, most significant first."""
    raw = np.ascontiguousarray(words.astype(">u8")).view(np.uint8)
    return np.unpackbits(raw, axis=-1, bitorder="big").astype(bool)


def _lexmin(variants: np.ndarray) -> np.ndarray:
    """Smallest of (..., n, 2) words, comparing the high word first -> (..., 2)."""
    hi, lo = variants[..., 0], variants[..., 1]
    best_hi = hi.min(axis=-1, keepdims=True)
    lo_masked = np.where(hi == best_hi, lo, np.uint64(np.iinfo(np.uint64).max))
    pick = lo_masked.argmin(axis=-1)
    return np.take_along_axis(variants, pick[..., None, None], axis=-2)[..., 0, :]


def _bit_action() -> tuple[np.ndarray, np.ndarray]:
    """For each dihedral k: the source bit of every bit and whether it is complemented."""
    ids = np.zeros((_FREQS, _FREQS))
    ids[_CELL_U, _CELL_V] = np.arange(1, HASH_BITS + 1)
    perms = np.zeros((8, HASH_BITS), dtype=np.int64)
    flips = np.zeros((8, HASH_BITS), dtype=bool)
    for k in range(8):
        moved = transform_coefficients(ids, k)[_CELL_U, _CELL_V]
        perms[k] = np.abs(moved).astype(np.int64) - 1
        flips[k] = moved < 0
    return perms, flips


_PERMS, _FLIPS = _bit_action()


def orientations(words: np.ndarray) -> np.ndarray:
    """(..., 2) hashes -> (..., 8, 2): the hash of each dihedral transform of the window."""
    bits = _unpack(words)
    variants = bits[..., _PERMS] ^ _FLIPS  # (..., 8, 128)
    return _pack(variants)


def _integral(images: np.ndarray) -> np.ndarray:
    """Zero-padded integral image of the pixels the detector's boxes can reach around a
    possible anchor: (B, 204, 204) int32 (exact: they sum to at most 255 * 203^2 < 2^31).

    Built tile-innermost ((204, 204, B) in memory, returned as a (B, 204, 204) view): both
    running sums then add whole contiguous (204, B) planes, column by column and row by row,
    instead of ``np.cumsum`` along the rows (measured: 66 against 120 us a tile, the hash
    bit-identical)."""
    b = images.shape[0]
    first, side = WINDOW_HALF - _OUTER, _POSITIONS + 2 * _OUTER
    ii = np.zeros((side + 1, side + 1, b), dtype=np.int32)
    ii[1:, 1:] = images[:, first : first + side, first : first + side].transpose(1, 2, 0)
    for column in range(1, side + 1):
        ii[:, column] += ii[:, column - 1]
    for row in range(1, side + 1):
        ii[row] += ii[row - 1]
    return ii.transpose(2, 0, 1)


def _response(ii: np.ndarray, ys: slice | np.ndarray, xs: slice | np.ndarray, b=slice(None)):
    """Blob response at window positions: inner box mean minus outer box mean, scaled by
    both areas to stay an exact integer. ``ys``/``xs`` index positions (slices or arrays)."""

    def shift(index: slice | np.ndarray, offset: int) -> slice | np.ndarray:
        if isinstance(index, slice):
            return slice(index.start + offset, index.stop + offset, index.step)
        return index + offset

    def box(r: int) -> np.ndarray:
        top, bottom = _OUTER - r, _OUTER + r + 1
        return (
            ii[b, shift(ys, bottom), shift(xs, bottom)]
            - ii[b, shift(ys, top), shift(xs, bottom)]
            - ii[b, shift(ys, bottom), shift(xs, top)]
            + ii[b, shift(ys, top), shift(xs, top)]
        )

    return box(_INNER) * (2 * _OUTER + 1) ** 2 - box(_OUTER) * (2 * _INNER + 1) ** 2


#: The detector is first evaluated every 3rd position: positions 1, 4, ..., 169, a grid that
#: maps onto itself under flips (170 - p is on it), then refined to the best of the 3 x 3
#: positions around the chosen grid point.
_STEP, _GRID0 = 3, 1
_GRID = (_POSITIONS - 1 - _GRID0) // _STEP + 1
_NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def _anchors(images: np.ndarray) -> np.ndarray:
    """(B, 299, 299) uint8 -> (B, ANCHORS, 2) window top-left positions (row, column): the
    strongest blob responses, coarse to fine, with non-maximum suppression between them."""
    b = images.shape[0]
    ii = _integral(images)
    grid = slice(_GRID0, _GRID0 + _STEP * (_GRID - 1) + 1, _STEP)
    coarse = _response(ii, grid, grid)  # (B, G, G)
    floor = np.iinfo(coarse.dtype).min
    suppress = _SUPPRESS // _STEP
    rows = np.arange(b)
    out = np.zeros((b, ANCHORS, 2), dtype=np.int64)
    for k in range(ANCHORS):
        gy, gx = np.divmod(coarse.reshape(b, -1).argmax(axis=1), _GRID)
        ys = np.clip((_GRID0 + _STEP * gy)[:, None] + _NEIGHBOURS[None, :, 0], 0, _POSITIONS - 1)
        xs = np.clip((_GRID0 + _STEP * gx)[:, None] + _NEIGHBOURS[None, :, 1], 0, _POSITIONS - 1)
        best = _response(ii, ys, xs, rows[:, None]).argmax(axis=1)
        out[:, k, 0], out[:, k, 1] = ys[rows, best], xs[rows, best]
        for i in range(b):
            y0, x0 = max(gy[i] - suppress, 0), max(gx[i] - suppress, 0)
            coarse[i, y0 : gy[i] + suppress + 1, x0 : gx[i] + suppress + 1] = floor
    return out


def as_tile_batch(images: np.ndarray) -> np.ndarray:
    """One tile or a stack ((299, 299), (N, 299, 299) or (N, 299, 299, 1)) as (N, 299, 299)
    uint8; anything else is a ValueError."""
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[1:] != (S, S):
        raise ValueError(f"expected uint8 tiles of {S}x{S}, got {a.dtype} {a.shape}")
    return a


def _window_dct(windows: np.ndarray) -> np.ndarray:
    """``_DCT @ window @ _DCT.T`` of (n, 129, 129) uint8 windows, exactly: the first
    product in two exact float32 parts (see ``_DCT_SPLIT``), recombined and finished in
    float64 (integers below 2^53)."""
    parts = (_DCT_SPLIT @ windows.astype(np.float32)).astype(np.float64)
    return (64.0 * parts[:, :_FREQS] + parts[:, _FREQS:]) @ _DCT.T


def perceptual_hashes(images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Hashes of uint8 tiles ((N, 299, 299), (N, 299, 299, 1) or one (299, 299)) ->
    (N, ANCHORS, 2) uint64: each tile's anchor hashes, canonical and sorted."""
    a = as_tile_batch(images)
    out = np.zeros((a.shape[0], ANCHORS, HASH_WORDS), dtype=np.uint64)
    for start in range(0, a.shape[0], batch_size):
        chunk = np.ascontiguousarray(a[start : start + batch_size])
        b = chunk.shape[0]
        top_left = _anchors(chunk)
        side = 2 * WINDOW_HALF + 1
        views = np.lib.stride_tricks.sliding_window_view(chunk, (side, side), axis=(1, 2))
        tiles = np.repeat(np.arange(b), ANCHORS)
        windows = views[tiles, top_left[..., 0].ravel(), top_left[..., 1].ravel()]
        coeffs = _window_dct(windows)
        variants = np.stack(
            [_pack(transform_coefficients(coeffs, k)[:, _CELL_U, _CELL_V] > 0) for k in range(8)],
            axis=1,
        )  # (b * ANCHORS, 8, 2)
        canonical = _lexmin(variants).reshape(b, ANCHORS, HASH_WORDS)
        out[start : start + b] = sort_anchors(canonical)
    return out


def sort_anchors(hashes: np.ndarray) -> np.ndarray:
    """(N, A, 2) -> the same with each tile's anchor hashes in ascending order."""
    order = np.lexsort((hashes[..., 1], hashes[..., 0]), axis=-1)
    return np.take_along_axis(hashes, order[..., None], axis=1)


def tile_key(hashes: np.ndarray) -> np.ndarray:
    """(N, A, 2) -> (N, 2): a tile's canonical hash (its smallest anchor hash)."""
    return hashes[:, 0, :]


def to_hex(hashes: np.ndarray) -> list[str]:
    """(N, A, 2) -> one string per tile: its anchor hashes as 32 hex digits, comma-joined."""
    return [",".join(f"{int(w[0]):016x}{int(w[1]):016x}" for w in tile) for tile in hashes]


def from_hex(texts: Iterable[str]) -> np.ndarray:
    """Inverse of :func:`to_hex`; raises ValueError on malformed text."""
    rows = []
    for text in texts:
        parts = text.split(",")
        if len(parts) != ANCHORS or any(len(p) != 32 for p in parts):
            raise ValueError(f"not a perceptual hash: {text!r}")
        rows.append([[int(p[:16], 16), int(p[16:], 16)] for p in parts])
    return np.asarray(rows, dtype=np.uint64).reshape(-1, ANCHORS, HASH_WORDS)


def _popcount(words: np.ndarray) -> np.ndarray:
    return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)


def tile_distance(a: np.ndarray, b: np.ndarray) -> int:
    """The near-duplicate distance of two tiles given their (A, 2) hashes."""
    return int(pairwise_distances(a[None], b[None])[0, 0])


def pairwise_distances(a: np.ndarray, b: np.ndarray, *, chunk: int = 256) -> np.ndarray:
    """(Na, Nb) near-duplicate distances of (Na, A, 2) and (Nb, A, 2) tile hashes, by brute
    force (for small sets and checks; :func:`close_pairs` scales)."""
    vb = orientations(b)  # (Nb, A, 8, 2)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int64)
    for start in range(0, a.shape[0], chunk):
        va = a[start : start + chunk, None, :, None, None, :]  # (c, 1, A, 1, 1, 2)
        d = _popcount(va ^ vb[None, :, None, :, :, :])  # (c, Nb, A, A, 8)
        out[start : start + chunk] = d.min(axis=(2, 3, 4))
    return out


@dataclass(frozen=True)
class Pairs:
    """Tile pairs within the threshold: ``left[i]`` ~ ``right[i]`` at ``distance[i]``."""

    left: np.ndarray
    right: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return int(self.left.shape[0])


_CHUNKS = 8  # 16-bit chunks of a 128-bit hash


def _chunk_values(words: np.ndarray) -> np.ndarray:
    """(N, 2) -> (N, 8) int64 16-bit chunks."""
    shifts = np.array([48, 32, 16, 0], dtype=np.uint64)
    parts = (words[:, :, None] >> shifts) & np.uint64(0xFFFF)
    return parts.reshape(words.shape[0], _CHUNKS).astype(np.int64)


def _flip_masks(radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << i for i in bits) for bits in itertools.combinations(range(16), r)]
    return np.asarray(masks, dtype=np.int64)


def _entry_pairs(
    queries: np.ndarray,
    index: np.ndarray,
    max_distance: int,
    radius: int,
    budget: int = 4_000_000,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(query row, index row, distance) with Hamming distance <= max_distance among the
    pairs that agree within ``radius`` bits on some 16-bit chunk (multi-index hashing; all
    such pairs when ``radius >= max_distance // 8``; may repeat a pair; callers reduce)."""
    if queries.shape[0] == 0 or index.shape[0] == 0:
        return
    masks = _flip_masks(radius)
    q_chunks = _chunk_values(queries)
    i_chunks = _chunk_values(index)
    for c in range(_CHUNKS):
        order = np.argsort(i_chunks[:, c], kind="stable")
        starts = np.searchsorted(i_chunks[order, c], np.arange((1 << 16) + 1))
        for mask in masks:
            keys = q_chunks[:, c] ^ mask
            lo, hi = starts[keys], starts[keys + 1]
            counts = hi - lo
            hit = np.flatnonzero(counts)
            if hit.size == 0:
                continue
            # Expand in slices so a skewed bucket never needs unbounded memory.
            cum = np.cumsum(counts[hit])
            begin = 0
            while begin < hit.size:
                base = cum[begin - 1] if begin else 0
                end = int(np.searchsorted(cum, base + budget, side="right"))
                end = max(end, begin + 1)
                sel = hit[begin:end]
                n = counts[sel]
                q_rows = np.repeat(sel, n)
                first = np.repeat(lo[sel] - (np.cumsum(n) - n), n)
                i_rows = order[first + np.arange(q_rows.size)]
                d = _popcount(queries[q_rows] ^ index[i_rows])
                keep = d <= max_distance
                yield q_rows[keep], i_rows[keep], d[keep]
                begin = end


def _reduce_pairs(left: np.ndarray, right: np.ndarray, dist: np.ndarray) -> Pairs:
    """Unique (left, right) with the smallest distance of each."""
    if left.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy(), empty.copy())
    order = np.lexsort((dist, right, left))
    left, right, dist = left[order], right[order], dist[order]
    first = np.ones(left.size, dtype=bool)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    return Pairs(left[first], right[first], dist[first])


def close_pairs(
    queries: np.ndarray,
    index: np.ndarray | None = None,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    *,
    exhaustive: bool = False,
) -> Pairs:
    """Tile pairs whose near-duplicate distance is at most ``max_distance``.

    ``queries`` and ``index`` are (N, A, 2) tile hashes. With ``index=None`` this is the
    self-join of ``queries`` (pairs ``left < right``); otherwise ``left`` indexes
    ``queries`` and ``right`` indexes ``index``.

    By default a pair is compared when some 16-bit chunk of its closest anchor hashes agrees
    exactly: every pair within 7 bits is found (pigeonhole), and a farther pair whenever its
    differing bits spare one chunk (in the benchmark's threshold study this found every
    near-copy pair the exhaustive search found). ``exhaustive=True`` also probes chunks that
    differ in up to ``max_distance // 8`` bits, which finds every pair within
    ``max_distance``, at several times the cost (5-7x on 8,000 random tiles in the benchmark).
    """
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be within 0..{HASH_BITS - 1}")
    self_join = index is None
    target = queries if index is None else index
    anchors_q, anchors_i = queries.shape[1], target.shape[1]
    variants = orientations(queries).reshape(-1, HASH_WORDS)  # (Nq * A * 8, 2)
    flat_index = target.reshape(-1, HASH_WORDS)
    radius = max_distance // _CHUNKS if exhaustive else 0
    lefts, rights, dists = [], [], []
    for q_rows, i_rows, d in _entry_pairs(variants, flat_index, max_distance, radius):
        left = q_rows // (anchors_q * 8)
        right = i_rows // anchors_i
        if self_join:
            keep = left != right
            left, right, d = left[keep], right[keep], d[keep]
            left, right = np.minimum(left, right), np.maximum(left, right)
        lefts.append(left)
        rights.append(right)
        dists.append(d)
    if not lefts:
        return _reduce_pairs(*(np.zeros(0, dtype=np.int64) for _ in range(3)))
    return _reduce_pairs(np.concatenate(lefts), np.concatenate(rights), np.concatenate(dists))


def union_find_groups(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by edges ``left[i] - right[i]``: the group
    of each node, numbered by its smallest member (so labels do not depend on edge order)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller index becomes the root
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def group_tiles(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Near-duplicate groups of (N, A, 2) tile hashes: a group label per tile (the index of
    the group's first tile)."""
    pairs = close_pairs(hashes, None, max_distance)
    return union_find_groups(hashes.shape[0], pairs.left, pairs.right)


@dataclass(frozen=True)
class FileHashes:
    """Hashes and labels of the records of one tfrecord file, in file order."""

    path: str
    hashes: np.ndarray  # (n, ANCHORS, 2) uint64
    labels: np.ndarray  # (n,) int64, the 5-class label

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _tile_pixels(path: Path, index: int, raw: bytes) -> tuple[np.ndarray, int]:
    try:
        tile = decode_tile(raw)
    except ExampleDecodeError as exc:
        raise DataError(path, f"record {index}: not a tf.train.Example ({exc})") from exc
    if not tile.image_ok:
        size = None if tile.image is None else len(tile.image)
        raise DataError(path, f"record {index}: image has {size} bytes, expected {IMAGE_BYTES}")
    if tile.label is None:
        raise DataError(path, f"record {index}: no single int64 feature 'label'")
    return tile.pixels(), tile.label


def hash_tfrecord(path: Path | str, *, batch_size: int = 64, progress: bool = False) -> FileHashes:
    """Stream a tfrecord file and hash every tile (constant memory: one batch of pixels).

    Raises :class:`DataError` naming the file and record when a record is unreadable or
    is not a 299x299 tile of the public schema.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    chunks: list[np.ndarray] = []
    labels: list[int] = []
    buffer: list[np.ndarray] = []
    with tqdm(desc=f"hashing {path.name}", unit="tile", disable=not progress) as bar:
        for index, raw in enumerate(iter_records(path)):
            pixels, label = _tile_pixels(path, index, raw)
            buffer.append(pixels)
            labels.append(label)
            if len(buffer) == batch_size:
                chunks.append(perceptual_hashes(np.stack(buffer), batch_size=batch_size))
                bar.update(len(buffer))
                buffer = []
        if buffer:
            chunks.append(perceptual_hashes(np.stack(buffer), batch_size=batch_size))
            bar.update(len(buffer))
    hashes = np.concatenate(chunks) if chunks else np.zeros((0, ANCHORS, HASH_WORDS), np.uint64)
    return FileHashes(str(path), hashes, np.asarray(labels, dtype=np.int64))
