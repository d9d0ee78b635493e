"""Memory bounds of the prediction service: decoded pixels per request and across requests.

An upload's compressed size says little about the memory its pixels take once decoded (a
20 MB PNG may hold 400 million pixels), so the service counts pixels from the image header
before decoding (:func:`mammo_pipeline.serving.image_io.peek_size`) and:

- refuses a request whose images hold more than ``per_request`` pixels together (413, before
  anything is decoded);
- holds a share of one process-wide :class:`PixelBudget` (``total`` pixels) while it decodes
  and preprocesses, so concurrent requests never decode more than ``total`` pixels at once;
  a request that cannot get its share within ``wait_s`` seconds gets 503 (busy), never an
  out-of-memory kill.

Default budgets (the proposed ``Settings`` fields ``serve_request_pixel_budget`` and
``serve_total_pixel_budget``) are in :data:`DEFAULT_REQUEST_PIXELS` / :data:`DEFAULT_TOTAL_PIXELS`.
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
DEFAULT_WAIT_S = 30.0


class PixelBudget:
    """A weighted semaphore counting decoded pixels (asyncio, one event loop).

    Requests are served first come, first served: a large request waiting for its share is
    not starved by a stream of small ones behind it.
    """

    def __init__(
        self,
        total: int = DEFAULT_TOTAL_PIXELS,
        per_request: int = DEFAULT_REQUEST_PIXELS,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        if total < 1 or per_request < 1:
            raise ValueError("pixel budgets must be positive")
        self.total = total
        self.per_request = min(per_request, total)
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def check_request(self, pixels: int) -> None:
        """413 when one request asks for more than its budget (before any decoding)."""
        if pixels > self.per_request:
            raise InputError(
                f"the images of this request hold {pixels} pixels, over the per-request "
                f"budget of {self.per_request} decoded pixels",
                status=413,
            )

    def _wake(self) -> None:
        while self._waiters:
            need, fut = self._waiters[0]
            if fut.done():
                self._waiters.pop(0)
                continue
            if self.in_use + need > self.total:
                return
            self._waiters.pop(0)
            self.in_use += need
            self.peak = max(self.peak, self.in_use)
            fut.set_result(None)

    async def _acquire(self, pixels: int) -> None:
        if not self._waiters and self.in_use + pixels <= self.total:
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((pixels, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except TimeoutError:
            self._give_up(pixels, fut)
            raise InputError(
                f"server busy: no room to decode {pixels} more pixels within {self.wait_s:g} s",
                status=503,
            ) from None
        except asyncio.CancelledError:
            self._give_up(pixels, fut)
            raise

    def _give_up(self, pixels: int, fut: asyncio.Future[None]) -> None:
        if fut.done() and not fut.cancelled():  # granted just as we gave up: give it back
            self.in_use -= pixels
        else:
            fut.cancel()
        self._wake()

    def _release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._wake()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget for the duration of the block."""
        self.check_request(pixels)
        pixels = max(1, pixels)
        await self._acquire(pixels)
        try:
            yield
        finally:
            self._release(pixels)
