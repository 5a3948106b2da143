"""Run jobs: inside the server (SQLite mode) or as `python -m app worker` processes (any mode).

Both use huey's consumer with thread workers, plus a housekeeping thread that heart-beats the
jobs in flight and sweeps the store (jobs of dead workers go back to the queue, expired ones go).
A standalone worker stops gracefully on SIGTERM: it finishes the job in hand and takes no other.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from huey.consumer import Consumer

from app.core.config import Settings
from app.jobs.queue import JobQueue
from app.jobs.records import local_worker_is_dead, worker_name
from app.jobs.runner import JobRunner
from app.services.container import Services

log = logging.getLogger(__name__)
EMBEDDED_SHUTDOWN_TIMEOUT_S = 30.0


class _EmbeddedConsumer(Consumer):
    """huey's consumer without signal handlers: inside the server, uvicorn owns SIGINT/SIGTERM."""

    def _set_signal_handlers(self) -> None:
        pass


def consumer_options(queue: JobQueue, threads: int) -> dict[str, Any]:
    """Thread workers; SQLite is polled at least twice a second (Redis blocks on the queue instead)."""
    # Our runner logs each job's start and end with its id; huey's own per-message lines repeat them.
    huey_log = logging.getLogger("huey")
    if huey_log.getEffectiveLevel() < logging.WARNING and logging.getLogger().level > logging.DEBUG:
        huey_log.setLevel(logging.WARNING)
    return {"workers": threads, "worker_type": "thread", "periodic": False, "max_delay": 0.5}


class Housekeeper(threading.Thread):
    """Every quarter lease: refresh the heartbeat of jobs in flight, then sweep the store."""

    def __init__(self, queue: JobQueue, runner: JobRunner | None) -> None:
        super().__init__(name="job-housekeeper", daemon=True)
        self.queue = queue
        self.runner = runner
        self.interval_s = max(0.25, queue.settings.job_lease_s / 4)
        self._stop_event = threading.Event()

    def _alive(self) -> set[str]:
        return {self.runner.name} if self.runner is not None else set()

    def tick(self) -> None:
        if self.runner is not None:
            for job_id, attempt in self.runner.in_flight().items():
                self.queue.store.heartbeat(job_id, self.runner.name, attempt)
        self.queue.sweep(lambda worker: local_worker_is_dead(worker, self._alive))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                log.exception("job housekeeping failed; trying again in %.0f s", self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()


class JobSystem:
    """The queue a server or worker uses, and (when this process works jobs) its consumer."""

    def __init__(self, queue: JobQueue, runner: JobRunner | None = None, threads: int = 1) -> None:
        self.queue = queue
        self.runner = runner
        self.consumer: Consumer | None = None
        self.housekeeper = Housekeeper(queue, runner)
        if runner is not None:
            queue.bind(runner)
            self.consumer = _EmbeddedConsumer(queue.huey, **consumer_options(queue, threads))

    @property
    def working(self) -> bool:
        return self.consumer is not None

    def start(self) -> None:
        try:
            self.housekeeper.tick()  # at once: a restart re-enqueues what the previous process left running
        except Exception:
            # The server still starts (its other routes work); job routes answer 503 until the store is back.
            log.exception("the job store is not reachable at start-up")
        self.housekeeper.start()
        if self.consumer is not None:
            self.consumer.start()
            log.info("job worker %s started (%s queue, %d waiting)", self.runner_name, self.queue.mode,
                     self.queue.pending())  # fmt: skip

    @property
    def runner_name(self) -> str:
        return self.runner.name if self.runner is not None else "-"

    def stop(self, timeout_s: float | None = EMBEDDED_SHUTDOWN_TIMEOUT_S) -> None:
        """Finish the job in hand (up to `timeout_s`), take no new one; then hand back anything unfinished."""
        self.housekeeper.stop()
        if self.consumer is not None and self.runner is not None:
            self.runner.stopping.set()
            self.consumer.shutdown_timeout = timeout_s
            self.consumer.stop(graceful=True)
            self.runner.hand_back_in_flight()
            self.runner.close()
        self.queue.close()


def start_embedded_worker(services: Services) -> JobSystem:
    """The server's job system: SQLite mode works jobs in-process unless EMBEDDED_WORKER=false;
    Redis mode only enqueues (workers elsewhere take the jobs)."""
    settings = services.settings
    queue = JobQueue(settings)
    runner = None
    if not settings.queue_url and settings.embedded_worker:
        runner = JobRunner(queue, services, worker_name("server"))
    system = JobSystem(queue, runner)
    system.start()
    return system


def stop_embedded_worker(system: JobSystem) -> None:
    system.stop()


@asynccontextmanager
async def jobs_lifespan(app: Any, services: Services) -> AsyncIterator[JobSystem]:
    """For the server's lifespan: `app.state.jobs` while serving, a graceful stop at shutdown."""
    system = await asyncio.to_thread(start_embedded_worker, services)
    app.state.jobs = system
    try:
        yield system
    finally:
        await asyncio.to_thread(stop_embedded_worker, system)


class _StandaloneConsumer(Consumer):
    """huey's consumer with its signal handling: SIGTERM graceful (finish the job), SIGINT immediate."""


def run_worker(settings: Settings, label: str | None = None, threads: int = 1) -> int:
    """`python -m app worker`: take jobs until SIGTERM/SIGINT. Exit code 0 after a clean stop."""
    services = Services.build(settings)
    queue = JobQueue(settings)
    runner = JobRunner(queue, services, worker_name(label or "worker"))
    queue.bind(runner)
    log.info("worker %s: loading the model before taking jobs", runner.name)
    services.manager.get()
    consumer = _StandaloneConsumer(queue.huey, graceful_signal="TERM", **consumer_options(queue, threads))
    housekeeper = Housekeeper(queue, runner)
    housekeeper.tick()
    housekeeper.start()
    log.info(
        "worker %s ready: %s queue at %s, %d job(s) waiting; SIGTERM stops after the current job",
        runner.name, queue.mode, redact_url(settings.queue_url) or settings.data_dir, queue.pending(),
    )  # fmt: skip
    try:
        consumer.run()  # blocks; returns after a signal (graceful for SIGTERM)
    finally:
        runner.stopping.set()
        housekeeper.stop()
        runner.hand_back_in_flight()
        runner.close()
        queue.close()
        services.close()
    log.info("worker %s stopped after %d job(s)", runner.name, runner.completed)
    return 0


def redact_url(url: str) -> str:
    """`redis://:secret@host:6379/0` → `redis://***@host:6379/0` for log lines."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url
