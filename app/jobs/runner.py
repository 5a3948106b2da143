"""Work one job: claim it, decode its stored images, run its kind, store the outcome, call back.

The claim is what makes a job run at most once per attempt: a duplicate queue message, or one for a
job that was cancelled meanwhile, finds nothing to claim and is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.core.errors import AppError, Busy, InferenceError
from app.core.images import ImageLimits, declared_pixels, load_image_bytes
from app.jobs.callbacks import CallbackPoster
from app.jobs.kinds import ImageOrError, run_kind
from app.jobs.params import describe, load_params
from app.jobs.queue import STORE_ERRORS, JobQueue
from app.jobs.records import JobInput, JobRecord, JobStatus
from app.services.container import Services
from app.services.fetch import FetchPolicy

log = logging.getLogger(__name__)
BUSY_RETRY_DELAY_S = 2.0


class JobRunner:
    """Bound to a queue (`queue.bind(runner)`); huey calls it with a job id on a worker thread."""

    def __init__(self, queue: JobQueue, services: Services, name: str) -> None:
        self.queue = queue
        self.services = services
        self.name = name
        settings = services.settings
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.poster = CallbackPoster(FetchPolicy.from_settings(settings))
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        # Callbacks go out on their own thread: a slow receiver must not hold up the next job.
        self._callbacks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-callback")
        self.completed = 0
        self.stopping = threading.Event()

    def in_flight(self) -> dict[str, int]:
        """job id → attempt, for the heartbeat."""
        with self._lock:
            return dict(self._in_flight)

    def _claim(self, job_id: str) -> JobRecord | None:
        """The message is already off the queue and exists nowhere else: ride out a store outage
        (Redis restarting) by retrying, rather than drop the job."""
        delay = 1.0
        while True:
            try:
                return self.queue.store.claim(job_id, self.name)
            except STORE_ERRORS as exc:
                if self.stopping.is_set():
                    log.error("job %s: store unreachable while stopping (%s); it stays queued", job_id, exc)
                    return None
                log.warning("job %s: cannot reach the job store (%s); retrying in %.0f s", job_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def __call__(self, job_id: str) -> None:
        record = self._claim(job_id)
        if record is None:
            log.debug("job %s: nothing to claim (cancelled, finished or taken)", job_id)
            return
        attempt = record.attempts
        with self._lock:
            self._in_flight[job_id] = attempt
        started = time.perf_counter()
        log.info(
            "job %s started: %s, %d image(s), attempt %d/%d (%d waiting)",
            job_id, _describe(record), len(record.image_names), attempt, record.max_attempts, self._waiting(),
        )  # fmt: skip
        try:
            finished = self._work(record, attempt)
        finally:
            with self._lock:
                self._in_flight.pop(job_id, None)
        if finished is None:
            return
        seconds = time.perf_counter() - started
        self.completed += 1
        if finished.status is JobStatus.COMPLETE:
            log.info("job %s complete in %.1f s (%d done by this worker)", job_id, seconds, self.completed)
        else:
            log.warning(
                "job %s %s in %.1f s: %s", job_id, finished.status.value, seconds, (finished.error or {}).get("message")
            )
        if finished.callback_url:
            self._callbacks.submit(self._deliver, finished)

    def _work(self, record: JobRecord, attempt: int) -> JobRecord | None:
        store = self.queue.store
        try:
            params = load_params(record.kind, record.params)
            stored = self._stored_inputs(record)
            # The decoded images count against the process's pixel budget, as the API's requests do: they are
            # held until the job's model work is done (a worker in the server shares the budget with it).
            pixels = sum(declared_pixels(item.data, self.limits) for item in stored)
            self.services.pixels.check_request(pixels)
            with self.services.pixels.hold_blocking(pixels):
                images = self._images(params.input_errors or {}, stored)
                result, failure = run_kind(self.services.analysis, params, record.image_names, images)
        except Busy:
            # The model's own queue or the pixel budget is full (the server's requests come first): try again shortly.
            if store.release(record.id, self.name, attempt):
                self.queue.enqueue(record.id, delay=BUSY_RETRY_DELAY_S)
                log.info("job %s: model or pixel budget busy, queued again in %.0f s", record.id, BUSY_RETRY_DELAY_S)
            return None
        except AppError as exc:
            return self._finish(record, attempt, JobStatus.FAILED, None, exc)
        except Exception as exc:
            if self.stopping.is_set():  # the model was shut down under it: not the job's fault
                self._hand_back(record.id, attempt)
                return None
            log.exception("job %s crashed", record.id)
            error = InferenceError(f"The job failed: {type(exc).__name__}.")
            return self._finish(record, attempt, JobStatus.FAILED, None, error)
        status = JobStatus.FAILED if failure is not None else JobStatus.COMPLETE
        return self._finish(record, attempt, status, result, failure)

    def _finish(
        self, record: JobRecord, attempt: int, status: JobStatus, result: Any, error: AppError | None
    ) -> JobRecord | None:
        error_body = error.to_dict(with_status=True) if error is not None else None
        finished = self.queue.store.finish(record.id, self.name, attempt, status, result, error_body)
        if finished is None:
            log.info("job %s: result discarded (cancelled or taken over meanwhile)", record.id)
        return finished

    def _stored_inputs(self, record: JobRecord) -> list[JobInput]:
        stored = self.queue.store.inputs(record.id)
        if len(stored) != len(record.image_names):
            raise InferenceError("The job's images are missing from the store.", code="job_inputs_missing")
        return stored

    def _images(self, input_errors: Mapping[str, Any], stored: list[JobInput]) -> list[ImageOrError]:
        """Decode the stored bytes; an image that failed at submit time keeps its error."""
        images: list[ImageOrError] = []
        for index, item in enumerate(stored):
            problem = input_errors.get(str(index))
            if problem is not None:
                error = AppError(problem["message"], code=problem["code"])
                error.http_status = int(problem.get("status", 400))
                images.append(error)
                continue
            try:
                images.append(load_image_bytes(item.data, self.limits, item.name))
            except AppError as exc:
                images.append(exc)
        return images

    def _hand_back(self, job_id: str, attempt: int) -> None:
        if self.queue.store.release(job_id, self.name, attempt):
            self.queue.enqueue(job_id)
            log.warning("job %s handed back to the queue (worker stopping)", job_id)

    def hand_back_in_flight(self) -> None:
        """After a shutdown timeout: give unfinished jobs back so the next worker runs them at once."""
        for job_id, attempt in self.in_flight().items():
            self._hand_back(job_id, attempt)

    def _deliver(self, record: JobRecord) -> None:
        assert record.callback_url is not None
        report = self.poster.deliver(record.callback_url, record.to_public())
        self.queue.store.set_callback(record.id, report)

    def _waiting(self) -> int:
        try:
            return self.queue.pending()
        except Exception:  # noqa: BLE001 - progress lines must never fail a job
            return -1

    def close(self) -> None:
        self._callbacks.shutdown(wait=True)


def _describe(record: JobRecord) -> str:
    try:
        return describe(record.kind, load_params(record.kind, record.params))
    except AppError:  # unreadable params fail the job in `_work`, with the reason
        return record.kind
