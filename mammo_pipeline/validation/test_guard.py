"""The held-out test split as an index: no copy of a test tile (exact, flipped, rotated by
any angle, rescaled, inverted, or a shifted crop of the same region) may enter training.

The index holds, for every tile of the numpy splits under ``Settings().test_split``
(:func:`mammo_pipeline.data.manifest.held_out_files`), its perceptual hashes
(:mod:`mammo_pipeline.data.near_duplicates`: flips, quarter turns, shifted crops, noise,
JPEG), its ring spectra (:mod:`mammo_pipeline.data.ring_descriptors`: any rotation, rescales
0.8-1.25, inversion, about the centre), the name of its test file, its index there and the
sha1 of its pixels (the profile's ``content_hash``, for exact copies). An incoming tile is a
copy when its pixels are a test tile's, or its hash is within the near-duplicate threshold of
one, or its ring spectra correlate with one's (``docs/data-guards.md`` has the measured catch
rates and false joins). Building it hashes the whole test split once; the result is cached
under ``<reports>/test_guard/`` in a file named by the sha256 of the test files' manifest and
the descriptor versions, so it is rebuilt only when the test split (or a descriptor)
changes, and kept in memory for the life of the process.

No test split configured (no directory, no ``*_data.npy``) gives an empty index, logged as a
warning: there is then nothing to protect. A test split that cannot be read raises
:class:`~mammo_pipeline.errors.DataError`, so validation fails closed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_pipeline.config import Settings
from mammo_pipeline.data.manifest import build_manifest, held_out_files
from mammo_pipeline.data.near_duplicates import (
    ANCHORS,
    DEFAULT_MAX_DISTANCE,
    HASH_VERSION,
    HASH_WORDS,
    close_pairs,
    perceptual_hashes,
)
from mammo_pipeline.data.numpy_split import find_splits, load_split
from mammo_pipeline.data.ring_descriptors import (
    DEFAULT_MIN_SIMILARITY,
    HARMONICS,
    RING_VERSION,
    RINGS,
    SCALE_STEPS,
    RingIndex,
    ring_spectra,
)
from mammo_pipeline.errors import DataError

log = logging.getLogger(__name__)

CACHE_DIR = "test_guard"
_BATCH = 256


@dataclass(frozen=True)
class TestCopy:
    """An incoming tile that copies test tile ``index`` of ``test_file``: exactly, within
    hash ``distance``, or (``similarity`` set, distance -1) by its ring spectra."""

    __test__ = False  # not a pytest test class, despite the name

    test_file: str
    index: int
    distance: int
    exact: bool
    similarity: float | None = None

    def describe(self) -> str:
        if self.exact:
            how = "exact copy"
        elif self.similarity is not None:
            how = f"rotated/rescaled/inverted view, ring correlation {self.similarity:.2f}"
        else:
            how = f"distance {self.distance}"
        return f"{self.test_file}#{self.index} ({how})"


class TestGuard:
    """An index of the held-out test tiles (see the module docstring)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        hashes: np.ndarray,
        files: Sequence[str],
        file_of: np.ndarray,
        index: np.ndarray,
        content: np.ndarray,
        *,
        max_distance: int = DEFAULT_MAX_DISTANCE,
        key: str = "",
        rings: np.ndarray | None = None,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> None:
        self.hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, ANCHORS, HASH_WORDS)
        if rings is None:
            rings = np.zeros((0, RINGS + 2 * SCALE_STEPS, HARMONICS), np.complex64)
        self.rings = RingIndex(rings)
        self.min_similarity = min_similarity
        self.files = tuple(files)
        self.file_of = np.asarray(file_of, dtype=np.int64)
        self.index = np.asarray(index, dtype=np.int64)
        self.content = np.asarray(content, dtype="S40")
        self.max_distance = max_distance
        self.key = key
        self._by_content = {c.decode(): i for i, c in enumerate(self.content.tolist())}
        if len(self.rings) not in (0, len(self)):
            raise ValueError("ring spectra for some test tiles only")

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def empty(cls, max_distance: int = DEFAULT_MAX_DISTANCE) -> TestGuard:
        none = np.zeros(0, dtype=np.int64)
        return cls(
            np.zeros((0, ANCHORS, HASH_WORDS), np.uint64),
            (),
            none,
            none,
            none.astype("S40"),
            max_distance=max_distance,
        )

    def _copy(
        self, row: int, distance: int, exact: bool, similarity: float | None = None
    ) -> TestCopy:
        name = self.files[int(self.file_of[row])]
        return TestCopy(name, int(self.index[row]), distance, exact, similarity)

    def find(
        self,
        hashes: np.ndarray,
        content_hashes: Sequence[str | None] | None = None,
        rings: np.ndarray | None = None,
    ) -> list[TestCopy | None]:
        """For each query tile ((N, A, 2) hashes), the test tile it copies, or None: an
        exact pixel copy (by ``content_hashes``), else the closest by hash within the
        threshold, else (given the queries' ``rings``, (N, RINGS, HARMONICS) from
        :func:`~mammo_pipeline.data.ring_descriptors.ring_spectra`) the best ring
        correlation from ``min_similarity``."""
        hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, ANCHORS, HASH_WORDS)
        found: list[TestCopy | None] = [None] * hashes.shape[0]
        if rings is not None and len(rings) != hashes.shape[0]:
            raise ValueError("one ring descriptor per query hash is needed")
        if not len(self):
            return found
        pairs = close_pairs(hashes, self.hashes, self.max_distance)
        order = np.lexsort((pairs.right, pairs.distance, pairs.left))
        seen: set[int] = set()
        for k in order.tolist():
            q = int(pairs.left[k])
            if q not in seen:
                seen.add(q)
                found[q] = self._copy(int(pairs.right[k]), int(pairs.distance[k]), False)
        rest = [q for q, c in enumerate(found) if c is None]
        if rings is not None and rest and len(self.rings):
            best, score = self.rings.match(np.asarray(rings)[rest])
            for q, row, sim in zip(rest, best.tolist(), score.tolist(), strict=True):
                if sim >= self.min_similarity:
                    found[q] = self._copy(row, -1, False, round(float(sim), 4))
        for q, digest in enumerate(content_hashes or ()):
            row = self._by_content.get(digest) if digest else None
            if row is not None:
                found[q] = self._copy(row, 0, True)
        return found

    def nearest(
        self, hashes: np.ndarray, rings: np.ndarray | None = None
    ) -> list[tuple[str, int, int] | None]:
        """For each query tile, ``(test file, index, distance)`` of the test tile it copies
        (see :meth:`find`; distance -1 for a ring match), or None."""
        return [
            None if c is None else (c.test_file, c.index, c.distance)
            for c in self.find(hashes, rings=rings)
        ]

    def save(self, path: Path) -> Path:
        """Write the index atomically (temp file + rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    hashes=self.hashes,
                    files=np.asarray(self.files, dtype=str),
                    file_of=self.file_of,
                    index=self.index,
                    content=self.content,
                    max_distance=np.int64(self.max_distance),
                    key=np.asarray(self.key),
                    rings=self.rings.spectra,
                    min_similarity=np.float64(self.min_similarity),
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> TestGuard:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    z["hashes"],
                    [str(f) for f in z["files"].tolist()],
                    z["file_of"],
                    z["index"],
                    z["content"],
                    max_distance=int(z["max_distance"]),
                    key=str(z["key"]),
                    rings=z["rings"],
                    min_similarity=float(z["min_similarity"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(path, f"not a readable test-set index ({exc})") from exc


def build_guard(
    test_dir: Path | str, *, max_distance: int = DEFAULT_MAX_DISTANCE, progress: bool = False
) -> TestGuard:
    """Hash every tile of the numpy splits in ``test_dir`` and take its ring spectra."""
    from tqdm.auto import tqdm

    hashes, rings, file_of, index, content, names = [], [], [], [], [], []
    for f, data_path in enumerate(find_splits(test_dir)):
        split = load_split(data_path)
        names.append(data_path.name)
        n = len(split)
        bar = tqdm(total=n, desc=f"indexing test tiles of {data_path.name}", disable=not progress)
        for start in range(0, n, _BATCH):
            tiles = np.ascontiguousarray(split.images[start : start + _BATCH, :, :, 0])
            hashes.append(perceptual_hashes(tiles))
            rings.append(ring_spectra(tiles, index=True))
            content.extend(
                hashlib.sha1(t.tobytes(), usedforsecurity=False).hexdigest() for t in tiles
            )
            bar.update(tiles.shape[0])
        bar.close()
        file_of.append(np.full(n, f, dtype=np.int64))
        index.append(np.arange(n, dtype=np.int64))
    if not names:
        return TestGuard.empty(max_distance)
    return TestGuard(
        np.concatenate(hashes),
        names,
        np.concatenate(file_of),
        np.concatenate(index),
        np.asarray(content, dtype="S40"),
        max_distance=max_distance,
        rings=np.concatenate(rings),
    )


_MEMO: dict[tuple, TestGuard] = {}
_FILE_MEMO: dict[str, TestGuard] = {}


def guard_file(settings: Settings, *, max_distance: int = DEFAULT_MAX_DISTANCE) -> str:
    """Load (or build and cache) the index of ``settings.test_split`` as :func:`load_guard`
    does, and say where another process loads the same index from: its cache file, or ``""``
    when there is no test split (an empty index). Validation's pool workers use it so that
    the test split is hashed once per run, not once per worker."""
    guard = load_guard(settings, max_distance=max_distance)
    if not guard.key:
        return ""
    path = settings.reports / CACHE_DIR / f"{guard.key}.npz"
    if not path.is_file():  # the index came from memory, cached under other reports
        guard.save(path)
    return str(path)


def load_guard_file(path: str, *, max_distance: int = DEFAULT_MAX_DISTANCE) -> TestGuard:
    """The index :func:`guard_file` named (kept in memory for the life of the process)."""
    if not path:
        return TestGuard.empty(max_distance)
    if path not in _FILE_MEMO:
        _FILE_MEMO.clear()
        _FILE_MEMO[path] = TestGuard.load(Path(path))
    return _FILE_MEMO[path]


def _stat_key(files: list[Path], max_distance: int) -> tuple:
    stats = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return (stats, max_distance)


def load_guard(
    settings: Settings,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    progress: bool = False,
) -> TestGuard:
    """The index of ``settings.test_split``: from memory, else from the on-disk cache under
    ``settings.reports``, else built (and cached). Empty when no test split is configured."""
    test_dir = settings.test_split
    if not test_dir.is_dir() or not find_splits(test_dir):
        log.warning(
            "no held-out test split in %s: incoming files are not checked for test tiles", test_dir
        )
        return TestGuard.empty(max_distance)
    files = held_out_files(test_dir)
    memo_key = _stat_key(files, max_distance)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    manifest = build_manifest(files)
    versions = f"{HASH_VERSION}:{RING_VERSION}:{DEFAULT_MIN_SIMILARITY}"
    key = hashlib.sha256(f"{manifest.sha256}:{versions}:{max_distance}".encode()).hexdigest()
    cache = settings.reports / CACHE_DIR / f"{key}.npz"
    guard: TestGuard | None = None
    if cache.is_file():
        try:
            guard = TestGuard.load(cache)
        except DataError:
            log.warning("rebuilding the unreadable test-set index %s", cache)
    if guard is None or guard.key != key:
        guard = build_guard(test_dir, max_distance=max_distance, progress=progress)
        guard.key = key
        guard.save(cache)
    _MEMO.clear()  # one test split per process is the norm; never grow without bound
    _MEMO[memo_key] = guard
    return guard
