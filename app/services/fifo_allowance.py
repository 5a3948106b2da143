"""A counted allowance handed out first come, first served, to waiters on any thread or event loop.

The pixel budget (decoded pixels in flight) and the API's admission gate (model requests at once) are
both this: take an amount when it fits and nobody is waiting ahead, else wait in line for a bounded time.
Tests run each TestClient request on its own event loop and job workers wait on threads, so a waiter is
woken through its own loop (or a thread event), never through a loop-bound primitive.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class _Waiter:
    amount: int
    wake: Callable[[], object]  # called (from any thread) once the amount is granted


class FifoAllowance:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._used = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def used(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    async def acquire(self, amount: int, wait_s: float, max_waiting: int | None = None) -> bool:
        """True once `amount` is taken (give it back with `release`); False when the line already holds
        `max_waiting`, or `wait_s` passed first. A cancelled waiter leaves the line and re-raises."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = self._take_or_queue(
            amount, functools.partial(loop.call_soon_threadsafe, _resolve, future), wait_s, max_waiting
        )
        if not isinstance(waiter, _Waiter):
            return waiter
        try:
            async with asyncio.timeout(wait_s):
                await asyncio.shield(future)
            return True
        except BaseException as exc:
            if self._leave_line(waiter):
                self.release(amount)  # granted just as the wait ended: pass it on
            if isinstance(exc, TimeoutError):
                return False
            raise

    def acquire_blocking(self, amount: int, wait_s: float) -> bool:
        """`acquire` for a worker thread: blocks instead of awaiting."""
        granted = threading.Event()
        waiter = self._take_or_queue(amount, granted.set, wait_s, None)
        if not isinstance(waiter, _Waiter):
            return waiter
        return granted.wait(wait_s) or self._leave_line(waiter)

    def release(self, amount: int) -> None:
        granted: list[_Waiter] = []
        with self._lock:
            self._used -= amount
            while self._waiters and self._used + self._waiters[0].amount <= self.capacity:
                waiter = self._waiters.popleft()
                self._used += waiter.amount
                granted.append(waiter)
        for waiter in granted:
            waiter.wake()

    def _take_or_queue(
        self, amount: int, wake: Callable[[], object], wait_s: float, max_waiting: int | None
    ) -> bool | _Waiter:
        """True: taken now. False: no wait allowed, or the line is full. A `_Waiter`: in line."""
        with self._lock:
            if not self._waiters and self._used + amount <= self.capacity:
                self._used += amount
                return True
            if wait_s <= 0 or (max_waiting is not None and len(self._waiters) >= max_waiting):
                return False
            waiter = _Waiter(amount, wake)
            self._waiters.append(waiter)
            return waiter

    def _leave_line(self, waiter: _Waiter) -> bool:
        """Leave the line; True when the amount was granted meanwhile (the caller now holds it)."""
        with self._lock:
            granted = waiter not in self._waiters
            if not granted:
                self._waiters.remove(waiter)
        if not granted:
            self.release(0)  # a smaller request behind this one may fit now
        return granted


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
