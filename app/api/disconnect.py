"""Stop work nobody waits for: a client that disconnects cancels its request's pending work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    # Once the body is read, the server's next message for this request is `http.disconnect`.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def run_unless_disconnected(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """`(True, result)`, or `(False, None)` after cancelling `work` because the client went away.

    Cancelling reaches `ModelManager.run_async`, which drops queued model work that has not started.
    """
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending = [task for task in (job, watcher) if not task.done()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if job.cancelled():
        return False, None
    return True, job.result()
