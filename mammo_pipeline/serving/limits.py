"""Memory bounds of the prediction service: budgets that concurrent requests share.

Three process-wide budgets (one event loop; settings in ``mammo_pipeline/config.py``, the
design in ``docs/serving-bounds.md``):

- :class:`ByteBudget`: request bytes held buffered by the request guard
  (``serve_inflight_bytes``). A body with Content-Length reserves its whole size before a
  byte is read; a chunked body reserves chunk by chunk as it arrives. A body that can never
  fit is a 413 (:func:`body_limit`); one that does not fit now waits at most
  ``serve_busy_wait_s`` and then gets 503 with ``Retry-After``.
- :class:`PixelBudget`: decoded pixels (``serve_pixel_budget``), counted from the image
  headers before decoding (:func:`mammo_pipeline.serving.image_io.peek_film`): over the
  per-request cap is a 413, no room within the wait is a 503.
- :class:`Admission`: whole-film analyses admitted at once (``serve_max_analyses``); one more
  is refused by the guard with 503 before its body is read.

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
#: Pixels all concurrent requests may hold decoded at once.
DEFAULT_TOTAL_PIXELS = 60_000_000
#: Seconds a request waits for its share before a 503.
DEFAULT_WAIT_S = 2.0
#: Multipart framing allowed on top of the file bytes of a body.
MULTIPART_OVERHEAD = 64 * 1024


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


class ByteBudget(_Weighted):
    """Request bytes buffered at once by all requests."""

    unit = "request bytes"


class PixelBudget(_Weighted):
    """Decoded pixels held at once by all requests, with a per-request cap (413)."""

    unit = "decoded pixels"

    def __init__(
        self,
        total: int = DEFAULT_TOTAL_PIXELS,
        per_request: int = DEFAULT_REQUEST_PIXELS,
        wait_s: float = DEFAULT_WAIT_S,
        retry_after: int = 5,
    ) -> None:
        if per_request < 1:
            raise ValueError("pixel budgets must be positive")
        super().__init__(total, wait_s, retry_after)
        self.per_request = min(per_request, total)

    def check_request(self, pixels: int, cap: int | None = None) -> None:
        """413 when one request asks for more than its budget (``cap``, default
        ``per_request``; never more than ``total``), before any decoding."""
        cap = min(cap or self.per_request, self.total)
        if pixels > cap:
            raise InputError(
                f"the images of this request hold {pixels} pixels, over the per-request "
                f"budget of {cap} decoded pixels",
                status=413,
            )

    @asynccontextmanager
    async def hold(self, pixels: int, cap: int | None = None) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget for the duration of the block."""
        self.check_request(pixels, cap)
        await self.acquire(pixels)
        try:
            yield
        finally:
            self.release(pixels)


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
