"""Loads each backend once (thread-safe), routes each task to its backend and runs it off the event loop.

`run`/`run_async` take `TaskRequest`s for any registered task: each goes to the backend that serves it
(`app/models/registry.py`) and every result comes back stamped with its `RunInfo`. Backends that batch
(`BatchedBackend`: Florence-2) go through a `DynamicBatcher` (one worker thread per model) that runs
concurrent requests from the chat, the API and jobs together in one `generate` call; per-request work
that needs no model (the image resize, parsing the answer) runs on the caller's thread. Other backends
run on the one inference thread behind the same bounded queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

from app.core.classification_results import AnyTaskResult
from app.core.config import Settings
from app.core.errors import AppError, Busy, ModelUnavailable, UnknownTask
from app.core.results import RunInfo
from app.core.tasks import TaskSpec, get_task
from app.models.base import Backend, TaskRequest
from app.models.batching import DynamicBatcher
from app.models.florence import FlorenceBackend, GenerationOptions
from app.models.florence_inputs import PreparedInput
from app.models.florence_scores import GeneratedAnswer
from app.models.registry import route_table

log = logging.getLogger(__name__)
T = TypeVar("T")

FlorenceBatcher = DynamicBatcher[PreparedInput, GenerationOptions, GeneratedAnswer]


class ModelState(StrEnum):
    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@runtime_checkable
class BatchedBackend(Protocol):
    """A backend whose requests from different callers share one forward pass (Florence-2)."""

    name: str
    device: str

    def prepare(self, request: TaskRequest) -> PreparedInput: ...

    def default_generation(self, max_new_tokens: int | None = None) -> GenerationOptions: ...

    def generate_texts(
        self, prepared: Sequence[PreparedInput], generation: GenerationOptions, **kwargs: Any
    ) -> list[GeneratedAnswer]: ...

    def parse(self, request: TaskRequest, answer: GeneratedAnswer) -> Any: ...


@dataclass
class BackendSlot:
    backend: Backend
    state: ModelState = ModelState.NOT_LOADED
    error: AppError | None = None
    load_seconds: float | None = None

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.backend.name, "state": self.state.value, **self.backend.info()}
        if self.error is not None:
            body["error"] = self.error.message
        if self.load_seconds is not None:
            body["load_seconds"] = round(self.load_seconds, 2)
        return body


def resolve_max_batch_size(settings: Settings, device: str) -> int:
    """MAX_BATCH_SIZE, where 0 means: 32 on a GPU, 1 on CPU (a few cores gain nothing from batching)."""
    if settings.max_batch_size > 0:
        return settings.max_batch_size
    return 32 if device == "cuda" else 1


class ModelManager:
    """Owns the backends, their batchers and a thread for other model work, all behind bounded queues."""

    def __init__(self, settings: Settings, backends: Sequence[Backend] | None = None) -> None:
        self.settings = settings
        chosen = list(backends) if backends is not None else [FlorenceBackend(settings)]
        self._slots: dict[str, BackendSlot] = {b.name: BackendSlot(b) for b in chosen}
        self._routes = route_table(chosen)
        self._load_lock = threading.Lock()
        self._batchers: dict[str, FlorenceBatcher] = {}
        self._batchers_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False

    # -- routing and state -------------------------------------------------------------------------------
    def backend_name(self, task: TaskSpec | str) -> str:
        """The backend that serves `task`: the first configured one listing it (OCR_BACKEND=rapidocr puts
        rapidocr first), else the one its registry entry names."""
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        name = self._routes.get(spec.token) or (spec.backend if spec.backend in self._slots else None)
        if name is None:
            raise UnknownTask(f"No configured backend serves {spec.short_name}.")
        return name

    @property
    def primary(self) -> str:
        """The backend readiness reports on: the one that serves the default task (a caption)."""
        try:
            return self.backend_name("<CAPTION>")
        except UnknownTask:
            return next(iter(self._slots))

    def slot(self, name: str | None = None) -> BackendSlot:
        key = name or self.primary
        try:
            return self._slots[key]
        except KeyError:
            raise ModelUnavailable(f"No backend named {key!r} is configured.", code="unknown_backend") from None

    def state(self, name: str | None = None) -> ModelState:
        return self.slot(name).state

    def status(self) -> list[dict[str, Any]]:
        statuses = []
        for name, slot in self._slots.items():
            body = slot.status()
            batcher = self._batchers.get(name)
            if batcher is not None:
                body["batching"] = {
                    "max_batch_size": batcher.max_batch_size,
                    "batch_wait_ms": round(batcher.batch_wait_s * 1000, 1),
                    "queue_depth": batcher.queue_depth,
                    **batcher.stats.as_dict(),
                }
            statuses.append(body)
        return statuses

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not started yet, over all batchers, plus other queued model work."""
        return self._pending + sum(batcher.queue_depth for batcher in list(self._batchers.values()))

    def get(self, name: str | None = None) -> Any:
        """The loaded backend (default: the primary one), loading it on first use; a failed load is retried."""
        slot = self.slot(name)
        name = slot.backend.name
        if slot.state is ModelState.READY:
            return slot.backend
        with self._load_lock:
            if slot.state is ModelState.READY:
                return slot.backend
            slot.state, slot.error = ModelState.LOADING, None
            started = time.perf_counter()
            try:
                slot.backend.load()
            except AppError as exc:
                slot.state, slot.error = ModelState.FAILED, exc
                log.error("loading %s failed: %s", name, exc.message)
                raise
            except Exception as exc:
                error = ModelUnavailable(f"Loading {name} failed: {type(exc).__name__}: {str(exc)[:300]}")
                slot.state, slot.error = ModelState.FAILED, error
                log.exception("loading %s failed", name)
                raise error from exc
            slot.state, slot.load_seconds = ModelState.READY, time.perf_counter() - started
            return slot.backend

    # -- generic model work ------------------------------------------------------------------------------
    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Queue other model work on the inference thread; refuse with `Busy` when the queue is full."""
        with self._pending_lock:
            if self._pending >= self.settings.max_queue_size:
                raise Busy("The model is busy with other requests; try again in a few seconds.", retry_after=5)
            self._pending += 1
        future = self._executor.submit(fn)
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Future[Any]) -> None:
        with self._pending_lock:
            self._pending -= 1

    async def call_async(self, fn: Callable[[], T]) -> T:
        """Await model work without blocking the event loop; cancelling drops work not yet started."""
        future = self.submit(fn)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    # -- task requests, routed to their backends ------------------------------------------------------
    def run(self, requests: Sequence[TaskRequest], generation: GenerationOptions | None = None) -> list[AnyTaskResult]:
        """Run requests of any tasks (CLI, jobs, worker threads); blocks until every result is in."""
        results: dict[int, AnyTaskResult] = {}
        for name, indices in self._by_backend(requests):
            group = [requests[i] for i in indices]
            started = time.perf_counter()
            backend = self.get(name)
            if isinstance(backend, BatchedBackend):
                done = self._run_batched(backend, group, generation)
            else:
                done = list(self.submit(functools.partial(backend.run, group)).result())
            results.update(zip(indices, _stamped(backend, done, started), strict=True))
        return [results[i] for i in range(len(requests))]

    async def run_async(
        self, requests: Sequence[TaskRequest], generation: GenerationOptions | None = None
    ) -> list[AnyTaskResult]:
        """Like `run` for the event loop. Cancelling it drops the requests that have not started."""
        results: dict[int, AnyTaskResult] = {}
        for name, indices in self._by_backend(requests):
            group = [requests[i] for i in indices]
            started = time.perf_counter()
            backend = await asyncio.to_thread(self.get, name)
            if isinstance(backend, BatchedBackend):
                done = await self._run_batched_async(backend, group, generation)
            else:
                done = list(await self.call_async(functools.partial(backend.run, group)))
            results.update(zip(indices, _stamped(backend, done, started), strict=True))
        return [results[i] for i in range(len(requests))]

    def _by_backend(self, requests: Sequence[TaskRequest]) -> list[tuple[str, list[int]]]:
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self.backend_name(request.spec), []).append(index)
        return list(groups.items())

    def _run_batched(
        self, backend: BatchedBackend, requests: Sequence[TaskRequest], generation: GenerationOptions | None
    ) -> list[Any]:
        futures = self._enqueue(backend, requests, generation)
        try:
            answers = [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [backend.parse(request, answer) for request, answer in zip(requests, answers, strict=True)]

    async def _run_batched_async(
        self, backend: BatchedBackend, requests: Sequence[TaskRequest], generation: GenerationOptions | None
    ) -> list[Any]:
        # Admission and the per-request resize run off the event loop, in one hop.
        enqueueing = asyncio.ensure_future(asyncio.to_thread(self._enqueue, backend, requests, generation))
        try:
            futures = await asyncio.shield(enqueueing)
        except asyncio.CancelledError:
            enqueueing.add_done_callback(_cancel_enqueued)
            raise
        try:
            outcomes = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        answers: list[GeneratedAnswer] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            answers.append(outcome)
        return await asyncio.to_thread(
            lambda: [backend.parse(request, answer) for request, answer in zip(requests, answers, strict=True)]
        )

    def _enqueue(
        self, backend: BatchedBackend, requests: Sequence[TaskRequest], generation: GenerationOptions | None
    ) -> list[Future[GeneratedAnswer]]:
        batcher = self._batcher(backend)
        batcher.admit(len(requests))
        try:
            prepared = [backend.prepare(request) for request in requests]
        except BaseException:
            batcher.release(len(requests))
            raise
        return batcher.enqueue(prepared, generation or backend.default_generation())

    def _batcher(self, backend: BatchedBackend) -> FlorenceBatcher:
        batcher = self._batchers.get(backend.name)
        if batcher is not None:
            return batcher
        with self._batchers_lock:
            if self._closed:
                raise ModelUnavailable("The model is shutting down.", code="shutting_down")
            batcher = self._batchers.get(backend.name)
            if batcher is None:
                batcher = DynamicBatcher(
                    backend.generate_texts,
                    max_batch_size=resolve_max_batch_size(self.settings, backend.device),
                    batch_wait_s=self.settings.batch_wait_ms / 1000,
                    max_queue_size=self.settings.max_queue_size,
                    name=backend.name,
                )
                self._batchers[backend.name] = batcher
            return batcher

    def shutdown(self) -> None:
        with self._batchers_lock:
            self._closed = True
            batchers = list(self._batchers.values())
        for batcher in batchers:
            batcher.shutdown()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _stamped(backend: Backend, results: Sequence[AnyTaskResult], started: float) -> list[AnyTaskResult]:
    """Each result with the run info of the backend that produced it. Where the backend did not time its own
    work (the classifiers do), the duration is the call's wall time, its wait for the model included."""
    run = RunInfo(duration=time.perf_counter() - started, model=backend.model_id, library=backend.library)
    return [result if result.run is not None else replace(result, run=run) for result in results]


def _cancel_enqueued(task: asyncio.Future[list[Future[GeneratedAnswer]]]) -> None:
    """The caller went away while its requests were being queued: drop them once they are."""
    if not task.cancelled() and task.exception() is None:
        for future in task.result():
            future.cancel()
