"""Dynamic batching: one worker thread per model runs waiting requests together in one model call.

The worker takes the oldest waiting request, then gathers more requests with the same key (the
generation settings: requests with different beams or lengths cannot share a `generate` call) until
the batch holds `max_batch_size` or `batch_wait_s` has passed since it took the first one. Requests
with another key keep their place for a later batch. Each caller holds one `Future` per request and
gets exactly its own result. A request cancelled before its batch starts is dropped.

When a batch fails with `OutOfDeviceMemory` (or an `InferenceError`), it is split in halves and each
half is retried, down to single requests, so one request that cannot fit or cannot run fails alone
and the worker keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.core.errors import Busy, InferenceError, ModelUnavailable

log = logging.getLogger(__name__)

P = TypeVar("P")  # what one request carries into the batch
K = TypeVar("K", bound=Hashable)  # settings every request of a batch shares
R = TypeVar("R")  # what one request gets back


class OutOfDeviceMemory(InferenceError):
    """The accelerator ran out of memory for this work; a smaller batch may still fit."""

    code = "out_of_memory"
    http_status = 503


@dataclass(eq=False)
class _Item(Generic[P, K, R]):
    payload: P
    key: K
    future: Future[R] = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters for status pages and the benchmark."""

    batches: int = 0
    requests: int = 0
    splits: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, float | int]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "requests": self.requests,
            "mean_batch_size": round(mean, 2),
            "largest_batch": self.largest_batch,
            "split_retries": self.splits,
        }


class DynamicBatcher(Generic[P, K, R]):
    """A bounded queue in front of one worker thread that calls `run_batch(payloads, key)`."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[P], K], Sequence[R]],
        *,
        max_batch_size: int,
        batch_wait_s: float,
        max_queue_size: int,
        name: str = "model",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.batch_wait_s = max(0.0, batch_wait_s)
        self.max_queue_size = max_queue_size
        self.stats = BatchStats()
        self._run_batch = run_batch
        self._queue: deque[_Item[P, K, R]] = deque()
        self._reserved = 0  # admitted, still being prepared by their caller
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    # -- callers -----------------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests admitted that have not started running yet."""
        with self._cond:
            return self._reserved + sum(1 for item in self._queue if not item.future.cancelled())

    @property
    def waiting(self) -> int:
        """Requests queued for a batch (not counting those still being prepared by their caller)."""
        with self._cond:
            return sum(1 for item in self._queue if not item.future.cancelled())

    def admit(self, count: int) -> None:
        """Reserve room for `count` requests or refuse with `Busy`. An empty queue admits any count."""
        with self._cond:
            if self._closed:
                raise ModelUnavailable("The model is shutting down.", code="shutting_down")
            self._drop_cancelled()
            depth = self._reserved + len(self._queue)
            if depth > 0 and depth + count > self.max_queue_size:
                raise Busy("The model is busy with other requests; try again in a few seconds.", retry_after=5)
            self._reserved += count

    def release(self, count: int) -> None:
        """Give back room reserved with `admit` that will not be used."""
        with self._cond:
            self._reserved = max(0, self._reserved - count)

    def enqueue(self, payloads: Sequence[P], key: K) -> list[Future[R]]:
        """Queue admitted requests (all at once, so they can share a batch); one future per request."""
        items: list[_Item[P, K, R]] = [_Item(payload, key) for payload in payloads]
        with self._cond:
            self._reserved = max(0, self._reserved - len(items))
            if self._closed:
                raise ModelUnavailable("The model is shutting down.", code="shutting_down")
            self._queue.extend(items)
            self._cond.notify_all()
        return [item.future for item in items]

    def shutdown(self, wait_s: float = 10.0) -> None:
        """Stop the worker after its current batch; requests still waiting are cancelled.

        Waits up to `wait_s` for the worker to end: a worker thread still unwinding while the
        interpreter exits aborted the process (exit status 134) after int8 models had run on it.
        """
        with self._cond:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in waiting:
            item.future.cancel()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout=wait_s)

    # -- worker ------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            running = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if running:
                self.stats.batches += 1
                self.stats.requests += len(running)
                self.stats.largest_batch = max(self.stats.largest_batch, len(running))
                self._execute(running)

    def _collect(self) -> list[_Item[P, K, R]] | None:
        """Block for the oldest live request, then gather same-key requests until full or out of time."""
        with self._cond:
            while True:
                self._drop_cancelled()
                if self._queue:
                    break
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while True:
                batch.extend(self._take_matching(first.key, self.max_batch_size - len(batch)))
                remaining = deadline - time.monotonic()
                if len(batch) >= self.max_batch_size or remaining <= 0 or self._closed:
                    return batch
                self._cond.wait(remaining)

    def _take_matching(self, key: K, limit: int) -> list[_Item[P, K, R]]:
        taken: list[_Item[P, K, R]] = []
        kept: deque[_Item[P, K, R]] = deque()
        for item in self._queue:
            if item.future.cancelled():
                continue
            if len(taken) < limit and item.key == key:
                taken.append(item)
            else:
                kept.append(item)
        self._queue = kept
        return taken

    def _drop_cancelled(self) -> None:
        if any(item.future.cancelled() for item in self._queue):
            self._queue = deque(item for item in self._queue if not item.future.cancelled())

    def _execute(self, items: list[_Item[P, K, R]]) -> None:
        failure: str | None = None
        try:
            results = list(self._run_batch([item.payload for item in items], items[0].key))
            if len(results) != len(items):
                raise InferenceError(f"The model returned {len(results)} results for {len(items)} requests.")
        except (OutOfDeviceMemory, InferenceError) as exc:
            if len(items) == 1:
                items[0].future.set_exception(exc)
                return
            failure = exc.code
        except Exception as exc:
            log.exception("batch of %d failed", len(items))
            for item in items:
                item.future.set_exception(exc)
            return
        if failure is not None:
            # Halve and retry outside the handler, so the failed attempt's traceback (and any tensors
            # its frames hold) is gone first: memory may fit a smaller batch, and a request that fails
            # on its own ends up alone.
            half = len(items) // 2
            self.stats.splits += 1
            log.warning("batch of %d failed (%s); retrying as %d + %d", len(items), failure, half, len(items) - half)
            self._execute(items[:half])
            self._execute(items[half:])
            return
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)
