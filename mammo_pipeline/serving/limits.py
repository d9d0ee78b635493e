"""Memory bounds of the prediction service: one budget that concurrent requests share.

One process-wide :class:`MemoryBudget` in bytes (``serve_memory_budget``; design and
measurements in ``docs/serving-bounds.md``), drawn on by everything that holds memory for a
request, each charged what it is measured to cost:

- a request body, buffered by the request guard: :data:`BODY_COPIES` x its bytes (the
  guard's buffer, then BentoML's in-memory read of each file while it writes it to disk). A
  body with Content-Length is charged its whole size before a byte is read; a chunked body
  chunk by chunk as it arrives;
- decoded images, counted from their headers before decoding (:class:`PixelBudget`): a tile
  :data:`TILE_BYTES_PER_PIXEL` per pixel, a film :data:`FILM_BYTES_PER_PIXEL` per pixel of
  the larger of its decoded and resampled sizes.

A request whose share is over the whole budget (or over the per-request pixel cap) can never
fit: 413. One that does not fit now waits at most ``serve_busy_wait_s``, then gets 503 with
``Retry-After``. :class:`Admission` caps the whole-film analyses at once
(``serve_max_analyses``); one more is refused by the guard before its body is read.

:class:`BusyError` is the 503: an :class:`InputError` with a ``retry_after``; the service
answers it itself (``{"error": ...}`` and the header), never through BentoML, which would
replace the message of a 5xx and log a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mammo_pipeline.serving.image_io import InputError

#: Pixels one request may decode in total (sum over the images of a batch).
DEFAULT_REQUEST_PIXELS = 40_000_000
#: Seconds a request waits for its share before a 503.
DEFAULT_WAIT_S = 2.0
#: Multipart framing allowed on top of the file bytes of a body.
MULTIPART_OVERHEAD = 64 * 1024
#: Copies of a body's bytes held at once: the guard's buffer and BentoML's read of a file.
BODY_COPIES = 2
#: Peak bytes per pixel of a film analysis (decode, resample, mask, window), of the larger of
#: its decoded and resampled sizes: measured 12.1-16.1 on prepare_film alone, 13.7 for a
#: 38-megapixel film in the service (docs/serving-bounds.md).
FILM_BYTES_PER_PIXEL = 14
#: Peak bytes per decoded pixel of a tile (decode, 8-bit, model input).
TILE_BYTES_PER_PIXEL = 8


class BusyError(InputError):
    """503: the service has no room for this request now; retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, status=503)
        self.retry_after = retry_after


def body_limit(max_parts: int, max_file_bytes: int, inflight_bytes: int) -> int:
    """Largest body a route takes: its parts at the per-file limit, within the budget."""
    return min(max_parts * max_file_bytes + MULTIPART_OVERHEAD, inflight_bytes)


class _Weighted:
    """A weighted semaphore (asyncio, one event loop), first come first served: a large
    request waiting for its share is not starved by a stream of small ones behind it."""

    unit = "units"

    def __init__(self, total: int, wait_s: float, retry_after: int) -> None:
        if total < 1:
            raise ValueError("a budget must be positive")
        self.total = total
        self.wait_s = wait_s
        self.retry_after = retry_after
        self.in_use = 0
        self.peak = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def _grant(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)

    def _wake(self) -> None:
        while self._waiters:
            need, fut = self._waiters[0]
            if fut.done():
                self._waiters.pop(0)
                continue
            if self.in_use + need > self.total:
                return
            self._waiters.pop(0)
            self._grant(need)
            fut.set_result(None)

    def busy(self, n: int) -> BusyError:
        return BusyError(
            f"server busy: no room for {n} more {self.unit} within {self.wait_s:g} s "
            f"({self.in_use} of {self.total} in use); retry later",
            self.retry_after,
        )

    async def acquire(self, n: int, wait_s: float | None = None) -> None:
        """Take ``n`` (at most ``total``), waiting at most ``wait_s`` (default the budget's),
        else :class:`BusyError`."""
        n = max(1, min(n, self.total))
        if not self._waiters and self.in_use + n <= self.total:
            self._grant(n)
            return
        wait = self.wait_s if wait_s is None else wait_s
        if wait <= 0:
            raise self.busy(n)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), wait)
        except TimeoutError:
            self._give_up(n, fut)
            raise self.busy(n) from None
        except asyncio.CancelledError:
            self._give_up(n, fut)
            raise

    def _give_up(self, n: int, fut: asyncio.Future[None]) -> None:
        if fut.done() and not fut.cancelled():  # granted just as we gave up: give it back
            self.in_use -= n
        else:
            fut.cancel()
        self._wake()

    def release(self, n: int) -> None:
        self.in_use -= max(1, min(n, self.total))
        self._wake()


class MemoryBudget(_Weighted):
    """Bytes held at once by all requests: bodies and decoded images (module docstring)."""

    unit = "bytes of memory"

    def check(self, cost: int, what: str) -> None:
        """413 when ``what`` alone would need more than the whole budget."""
        if cost > self.total:
            raise InputError(
                f"{what} would hold about {cost} bytes in memory, over the service's memory "
                f"budget of {self.total} bytes (MAMMO_SERVE_MEMORY_BUDGET)",
                status=413,
            )

    @asynccontextmanager
    async def hold(self, cost: int, what: str = "this request") -> AsyncIterator[None]:
        """Hold ``cost`` bytes for the duration of the block (413 / 503 as above)."""
        self.check(cost, what)
        await self.acquire(cost)
        try:
            yield
        finally:
            self.release(cost)


_SHARED: dict[tuple[int, float, int], MemoryBudget] = {}


def shared_budget(total: int, wait_s: float, retry_after: int) -> MemoryBudget:
    """The process's one :class:`MemoryBudget` (the request guard and the service draw on
    the same one)."""
    key = (total, wait_s, retry_after)
    if key not in _SHARED:
        _SHARED[key] = MemoryBudget(total, wait_s, retry_after)
    return _SHARED[key]


class PixelBudget:
    """Decoded pixels: a per-request cap (413), charged to the memory budget per pixel."""

    def __init__(self, memory: MemoryBudget, per_request: int = DEFAULT_REQUEST_PIXELS) -> None:
        if per_request < 1:
            raise ValueError("pixel budgets must be positive")
        self.memory = memory
        self.per_request = per_request

    def check_request(self, pixels: int, cap: int | None = None) -> None:
        """413 when one request asks for more than its cap (``cap``, default
        ``per_request``), before any decoding."""
        cap = cap or self.per_request
        if pixels > cap:
            raise InputError(
                f"the images of this request hold {pixels} pixels, over the per-request "
                f"budget of {cap} decoded pixels",
                status=413,
            )

    @asynccontextmanager
    async def hold(
        self, pixels: int, cap: int | None = None, bytes_per_pixel: int = TILE_BYTES_PER_PIXEL
    ) -> AsyncIterator[None]:
        """Hold the memory of ``pixels`` decoded pixels for the duration of the block."""
        self.check_request(pixels, cap)
        what = f"decoding {pixels} pixels ({bytes_per_pixel} bytes each)"
        async with self.memory.hold(pixels * bytes_per_pixel, what):
            yield


class Admission:
    """At most ``limit`` requests of one kind in the service at once; no queue."""

    def __init__(self, limit: int, what: str, retry_after: int = 5) -> None:
        self.limit = limit
        self.what = what
        self.retry_after = retry_after
        self.active = 0

    def enter(self) -> None:
        """Admit one more, or :class:`BusyError` (nothing is held then)."""
        if self.active >= self.limit:
            raise BusyError(
                f"server busy: {self.active} {self.what} already in progress (limit "
                f"{self.limit}); retry later",
                self.retry_after,
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
