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

import asyncio
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from app.config import Settings
from app.errors import Busy, PayloadTooLarge

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


@dataclass(eq=False)
class _Waiter:
    pixels: int
    wake: Callable[[], object]  # called (from any thread) once the pixels are granted


class PixelBudget:
    """Thread- and loop-safe: one budget serves every request of the process, whatever loop runs it."""

    def __init__(self, per_request: int, in_flight: int, max_wait_s: float = 30.0) -> None:
        self.per_request = per_request
        self.in_flight = max(in_flight, per_request)
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._used = 0
        self._waiters: deque[_Waiter] = deque()

    @classmethod
    def from_settings(cls, settings: Settings) -> PixelBudget:
        per_request = settings.max_request_pixels
        return cls(per_request, settings.max_inflight_pixels or default_in_flight_pixels(per_request))

    @property
    def used(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        """Requests queued for pixels (a test and a metric can watch the queue without timing it)."""
        with self._lock:
            return len(self._waiters)

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
        await self._acquire(pixels)
        try:
            yield
        finally:
            self._release(pixels)

    @contextmanager
    def hold_blocking(self, pixels: int) -> Iterator[None]:
        """`hold` for a worker thread: blocks (up to `max_wait_s`, then `Busy`) instead of awaiting."""
        pixels = min(max(pixels, 0), self.in_flight)
        self._acquire_blocking(pixels)
        try:
            yield
        finally:
            self._release(pixels)

    def _try_take(self, pixels: int, wake: Callable[[], object]) -> _Waiter | None:
        """Take the pixels now (None), or queue a waiter that `wake` will signal."""
        with self._lock:
            if not self._waiters and self._used + pixels <= self.in_flight:
                self._used += pixels
                return None
            waiter = _Waiter(pixels, wake)
            self._waiters.append(waiter)
            return waiter

    def _give_up(self, waiter: _Waiter) -> bool:
        """Leave the queue; True when the pixels were granted meanwhile (the caller now holds them)."""
        with self._lock:
            granted = waiter not in self._waiters
            if not granted:
                self._waiters.remove(waiter)
        if not granted:
            self._grant_waiting()  # a smaller request behind this one may fit now
        return granted

    async def _acquire(self, pixels: int) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = self._try_take(pixels, lambda: loop.call_soon_threadsafe(_resolve, future))
        if waiter is None:
            return
        try:
            async with asyncio.timeout(self.max_wait_s):
                await asyncio.shield(future)
        except BaseException as exc:
            if self._give_up(waiter):
                self._release(pixels)
            if isinstance(exc, TimeoutError):
                raise _busy() from None
            raise

    def _acquire_blocking(self, pixels: int) -> None:
        granted = threading.Event()
        waiter = self._try_take(pixels, granted.set)
        if waiter is None or granted.wait(self.max_wait_s):
            return
        if not self._give_up(waiter):
            raise _busy()

    def _release(self, pixels: int) -> None:
        with self._lock:
            self._used -= pixels
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        granted: list[_Waiter] = []
        with self._lock:
            while self._waiters and self._used + self._waiters[0].pixels <= self.in_flight:
                waiter = self._waiters.popleft()
                self._used += waiter.pixels
                granted.append(waiter)
        for waiter in granted:
            waiter.wake()


def _busy() -> Busy:
    return Busy(
        "The server is decoding as many images as its memory budget allows; try again shortly.",
        code="busy",
        retry_after=5,
    )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
