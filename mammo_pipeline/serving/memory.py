"""Giving memory back after a burst (glibc only; elsewhere these do nothing).

Why: the service's large buffers (request bodies, decoded films, resampled copies) are
numpy arrays and bytes objects allocated with ``malloc``. glibc serves an allocation above
its mmap threshold with its own ``mmap`` (returned to the system on ``free``), but the
threshold is *dynamic*: each freed mmapped chunk raises it to that chunk's size, up to 32
MiB, so after the first burst most 1-32 MiB buffers come from the heap arenas (one per
thread that ever allocated: anyio's worker threads), where freed memory stays in the
process until the top of an arena happens to be free. Measured on the service: RSS stayed
hundreds of MiB above rest after a burst of large bodies (docs/serving-bounds.md).

So the service, once at start, pins the threshold at :data:`MMAP_THRESHOLD` (``mallopt``
``M_MMAP_THRESHOLD``, which also turns the dynamic adjustment off) and, after a request that
held a large share of a budget, calls ``malloc_trim(0)`` to return the free pages of every
arena (:func:`trim`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

logger = logging.getLogger(__name__)

#: Allocations at least this large get their own mmap and go back to the system on free.
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only: musl and macOS lack it
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def configure() -> bool:
    """Pin glibc's mmap threshold (see the module docstring); False where not glibc."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        logger.warning("mallopt(M_MMAP_THRESHOLD) refused; memory may be kept after bursts")
    return ok


def trim() -> bool:
    """Return the free memory of every malloc arena to the system (glibc ``malloc_trim``)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
