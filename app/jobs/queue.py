"""The job queue: huey for transport (SqliteHuey embedded, RedisHuey across machines), our store for state.

A queue message carries only a job id. The store decides whether the job runs (an atomic
queued → running claim), so a duplicate or late message is harmless and a restart can simply
enqueue again whatever was left behind. Messages are JSON, not pickle: a worker never unpickles
what it reads from a shared Redis.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from huey import Huey, RedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer

from app.core.config import Settings
from app.core.errors import ConfigError, NotFound
from app.jobs.records import Clock, JobInput, JobRecord, JobStore, QueueUnavailable, Recovery, fingerprint, new_job_id
from app.jobs.store import build_store

log = logging.getLogger(__name__)
QUEUE_NAME = "florence-jobs"
TASK_NAME = "run_job"
# A job created this long ago whose queue message was never sent is enqueued again by the sweep.
UNSENT_GRACE_S = 30.0


class JsonSerializer(Serializer):
    """huey messages as JSON. Only what our one task needs: no callbacks, chords or pickled objects."""

    def _serialize(self, data: Message) -> bytes:
        if data.on_complete is not None or data.on_error is not None or data.chord_config is not None:
            raise ValueError("job messages carry no pipelines")
        fields = data._asdict()
        for name in ("eta", "expires", "expires_resolved"):
            if isinstance(fields[name], datetime):
                fields[name] = {"datetime": fields[name].isoformat()}
        fields["args"] = list(fields["args"] or ())
        return json.dumps(fields, separators=(",", ":")).encode()

    def _deserialize(self, data: bytes) -> Message:
        fields: dict[str, Any] = json.loads(data)
        for name in ("eta", "expires", "expires_resolved"):
            value = fields.get(name)
            if isinstance(value, dict):
                fields[name] = datetime.fromisoformat(value["datetime"])
        fields["args"] = tuple(fields.get("args") or ())
        known = {k: v for k, v in fields.items() if k in Message._fields}
        return Message(**known)


def check_queue_url(url: str) -> None:
    """`QUEUE_URL` must be a Redis URL (parsed only: nothing connects); else `ConfigError`."""
    if not url:
        return  # SQLite under DATA_DIR
    try:
        redis.connection.parse_url(url)
    except ValueError:
        # Neither the URL nor redis' message: the URL may carry a password.
        raise ConfigError(
            f"QUEUE_URL (scheme {url.partition('://')[0][:20]!r}) is not a valid Redis URL: use "
            "redis://[:password@]host:6379/0 (rediss:// for TLS), or leave it empty for SQLite under DATA_DIR."
        ) from None


def build_huey(settings: Settings) -> Huey:
    if settings.queue_url:
        check_queue_url(settings.queue_url)
        return RedisHuey(QUEUE_NAME, url=settings.queue_url, results=False, serializer=JsonSerializer())
    path = Path(settings.data_dir) / "queue.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, serializer=JsonSerializer())


class StoreUnavailable(QueueUnavailable):
    code = "store_unavailable"


# What an unreachable store raises (Redis down or restarting; SQLite file locked or unreadable).
STORE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, sqlite3.OperationalError)


@contextmanager
def store_errors() -> Iterator[None]:
    """A store that cannot be reached is a 503 for the caller, not a stack trace."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise  # a constraint the store relies on (idempotency keys), not an outage
    except sqlite3.DatabaseError as exc:
        if not isinstance(exc, sqlite3.OperationalError):  # corrupt pages, "file is not a database"
            log.error("job store damaged: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable(
                "The job store is damaged; the operator has to restore it (see the server log).", retry_after=60
            ) from None
        log.error("job store unreachable: %s: %s", type(exc).__name__, exc)
        raise QueueUnavailable("The job queue is unreachable right now; try again shortly.", retry_after=5) from None
    except STORE_ERRORS as exc:
        log.error("job store unreachable: %s: %s", type(exc).__name__, exc)
        raise QueueUnavailable("The job queue is unreachable right now; try again shortly.", retry_after=5) from None


class JobQueue:
    """Submit, read, cancel and enqueue jobs. Workers `bind` the function that runs one job id."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore | None = None,
        huey: Huey | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store if store is not None else build_store(settings, clock)
        self.huey = huey if huey is not None else build_huey(settings)
        self._handler: Callable[[str], None] | None = None
        self._task = self.huey.task(name=TASK_NAME)(self._dispatch)

    @property
    def mode(self) -> str:
        return "redis" if self.settings.queue_url else "sqlite"

    def bind(self, handler: Callable[[str], None]) -> None:
        self._handler = handler

    def _dispatch(self, job_id: str) -> None:
        if self._handler is None:
            raise RuntimeError("this process has no job runner bound")
        self._handler(job_id)

    # -- client side ---------------------------------------------------------------------------------------
    def submit(
        self,
        owner: str,
        kind: str,
        params: dict[str, Any],
        inputs: Sequence[JobInput],
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        request_fingerprint: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Store the job with its images, then send the queue message. Returns (job, created).

        `request_fingerprint` identifies the request for idempotency (by default: kind, parameters
        and image bytes); a reused key with a different fingerprint is refused with 409.
        """
        record = JobRecord(
            id=new_job_id(),
            owner=owner,
            kind=kind,
            params=params,
            image_names=[item.name for item in inputs],
            created_at=self.clock(),
            max_attempts=self.settings.job_max_attempts,
            idempotency_key=idempotency_key,
            fingerprint=request_fingerprint or fingerprint(kind, {**params, "callback_url": callback_url}, inputs),
            callback_url=callback_url,
        )
        with store_errors():
            stored, created = self.store.create(record, inputs)
            if created:
                self.enqueue(stored.id)
            log.info("job %s queued (%s, %d images)", stored.id, kind, len(inputs))
        return stored, created

    def enqueue(self, job_id: str, delay: float | None = None) -> None:
        if delay:
            self._task.schedule(args=(job_id,), delay=delay)
        else:
            self._task(job_id)
        self.store.mark_enqueued(job_id)

    def get(self, job_id: str, owner: str) -> JobRecord:
        """The job if it exists, has not expired and belongs to `owner`; otherwise 404 (no hint which)."""
        with store_errors():
            record = self.store.get(job_id)
        if record is None or record.owner != owner:
            raise NotFound(f"No job {job_id[:64]!r}.", code="job_not_found")
        return record

    def find(self, owner: str, idempotency_key: str) -> JobRecord | None:
        with store_errors():
            return self.store.find(owner, idempotency_key)

    def list(self, owner: str, limit: int = 50) -> list[JobRecord]:
        with store_errors():
            return self.store.list_for_owner(owner, limit)

    def cancel(self, job_id: str, owner: str) -> JobRecord:
        """Cancel a queued or running job (a running model call finishes, its result is discarded)."""
        record = self.get(job_id, owner)
        if record.status.terminal:
            return record
        with store_errors():
            cancelled = self.store.cancel(job_id)
        if cancelled is not None:
            log.info("job %s cancelled", job_id)
            return cancelled
        return self.get(job_id, owner)

    # -- maintenance ---------------------------------------------------------------------------------------
    def sweep(self, is_dead: Callable[[str], bool]) -> Recovery:
        """Re-enqueue jobs of dead workers and unsent jobs; fail those out of attempts; drop expired ones."""
        now = self.clock()
        recovery = self.store.recover(now - self.settings.job_lease_s, is_dead)
        for job_id in recovery.requeued:
            log.warning("job %s: its worker stopped; queued again", job_id)
        for job_id in recovery.failed:
            log.error("job %s: its worker stopped too many times; marked failed", job_id)
        for job_id in {*recovery.requeued, *self.store.unsent(now - UNSENT_GRACE_S)}:
            self.enqueue(job_id)
        purged = self.store.purge_expired()
        if purged:
            log.info("dropped %d expired jobs", purged)
        return recovery

    def pending(self) -> int:
        return int(self.huey.pending_count())

    def close(self) -> None:
        self.store.close()
        self.huey.storage.close()
