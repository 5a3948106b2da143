"""A memory budget for decoded images: per request (413 above it) and across the process (queue within it).

A 105 KB PNG can hold 36 MP (108 MB of RGB); sixteen of them in one request took the server to 5.6 GB.
The sizes are read from the image headers before any pixel is decoded: a request whose images add up to
more than `per_request` pixels is refused with the limit, and requests being decoded or worked on hold
their pixels from `in_flight` until they finish; a request that does not fit waits its turn (FIFO), and
gives up with 503 `busy` after `max_wait_s`.

One budget per process (`Services.pixels`): the API's requests, chat messages and the jobs this process
works all draw from it. Async callers wait on their event loop (`hold`); worker threads block (`hold_blocking`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from app.core.config import Settings
from app.core.errors import Busy, PayloadTooLarge
from app.services.fifo_allowance import FifoAllowance

# Pillow holds RGB at 4 bytes per pixel; decoding and conversion briefly need about as much again.
BYTES_PER_PIXEL = 8
_MEMORY_SHARE = 4  # in-flight pixels use at most 1/4 of the machine's memory by default


def machine_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def default_in_flight_pixels(per_request: int) -> int:
    return max(per_request, machine_memory_bytes() // _MEMORY_SHARE // BYTES_PER_PIXEL)


class PixelBudget:
    """Thread- and loop-safe: one budget serves every request of the process, whatever loop runs it."""

    def __init__(self, per_request: int, in_flight: int, max_wait_s: float = 30.0) -> None:
        self.per_request = per_request
        self.in_flight = max(in_flight, per_request)
        self.max_wait_s = max_wait_s
        self._pixels = FifoAllowance(self.in_flight)

    @classmethod
    def from_settings(cls, settings: Settings) -> PixelBudget:
        per_request = settings.max_request_pixels
        return cls(per_request, settings.max_inflight_pixels or default_in_flight_pixels(per_request))

    @property
    def used(self) -> int:
        return self._pixels.used

    @property
    def waiting(self) -> int:
        """Requests queued for pixels (a test and a metric can watch the queue without timing it)."""
        return self._pixels.waiting

    def check_request(self, pixels: int) -> None:
        if pixels > self.per_request:
            raise PayloadTooLarge(
                f"The images of this request decode to {pixels:,} pixels; at most {self.per_request:,} fit in one "
                "request (MAX_REQUEST_PIXELS). Send fewer or smaller images.",
                code="request_too_many_pixels",
            )

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold `pixels` of the in-flight budget while the block runs (after `check_request`)."""
        pixels = min(max(pixels, 0), self.in_flight)
        if not await self._pixels.acquire(pixels, self.max_wait_s):
            raise _busy()
        try:
            yield
        finally:
            self._pixels.release(pixels)

    @contextmanager
    def hold_blocking(self, pixels: int) -> Iterator[None]:
        """`hold` for a worker thread: blocks (up to `max_wait_s`, then `Busy`) instead of awaiting."""
        pixels = min(max(pixels, 0), self.in_flight)
        if not self._pixels.acquire_blocking(pixels, self.max_wait_s):
            raise _busy()
        try:
            yield
        finally:
            self._pixels.release(pixels)


def _busy() -> Busy:
    return Busy(
        "The server is decoding as many images as its memory budget allows; try again shortly.",
        code="busy",
        retry_after=5,
    )
