"""Job records: what a job is, its life cycle, and the storage contract both backends implement."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from app.core.errors import Conflict, Unavailable

Clock = Callable[[], float]
CANCELLED_ERROR: dict[str, Any] = {"code": "cancelled", "message": "The job was cancelled."}


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.CANCELLED)


class IdempotencyConflict(Conflict):
    """The same `Idempotency-Key` was sent with a different request body."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was already used with a different request body.")


class QueueUnavailable(Unavailable):
    """The job store (Redis, or the SQLite file) cannot be reached right now."""

    code = "queue_unavailable"


@dataclass(frozen=True)
class JobInput:
    """One stored input image: the bytes as received (decoded again by the worker)."""

    name: str
    data: bytes


@dataclass
class JobRecord:
    id: str
    owner: str
    kind: str
    params: dict[str, Any]
    image_names: list[str]
    created_at: float
    max_attempts: int
    status: JobStatus = JobStatus.QUEUED
    idempotency_key: str | None = None
    fingerprint: str | None = None
    callback_url: str | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    heartbeat_at: float | None = None
    attempts: int = 0
    worker: str | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None  # delivery report: {"status", "attempts", "detail"}

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_public(self, include_result: bool = True) -> dict[str, Any]:
        """The JSON a client reads: no owner, fingerprint or worker internals."""
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status.value,
            "created_at": iso_time(self.created_at),
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "expires_at": iso_time(self.expires_at),
            "attempts": self.attempts,
            "images": len(self.image_names),
        }
        if include_result:
            body["result"] = self.result
        body["error"] = self.error
        if self.callback_url is not None:
            body["callback"] = self.callback or {"status": "pending"}
        return body

    def to_row(self) -> dict[str, Any]:
        """Flat values for storage: JSON text for the structured fields."""
        row = asdict(self)
        row["status"] = self.status.value
        for name in _JSON_FIELDS:
            row[name] = to_json(row[name])
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        values = dict(row)
        for name in _JSON_FIELDS:
            raw = values.get(name)
            values[name] = json.loads(raw) if raw not in (None, "") else None
        values["status"] = JobStatus(values["status"])
        values["image_names"] = values["image_names"] or []
        values["params"] = values["params"] or {}
        for name in ("created_at", "enqueued_at", "started_at", "finished_at", "expires_at", "heartbeat_at"):
            raw = values.get(name)
            values[name] = float(raw) if raw not in (None, "") else None
        for name in ("attempts", "max_attempts"):
            values[name] = int(values[name])
        for name in ("idempotency_key", "fingerprint", "callback_url", "worker"):
            if values.get(name) == "":
                values[name] = None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


_JSON_FIELDS = ("params", "image_names", "result", "error", "callback")


def to_json(value: Any) -> str:
    """How both stores keep a structured field: compact JSON text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def ended_fields(now: float, ttl_s: float, error: dict[str, Any] | None) -> dict[str, Any]:
    """What every move to a terminal state stores: the error, when it ended and expires, no lease."""
    return {"error": to_json(error), "finished_at": now, "expires_at": now + ttl_s, "heartbeat_at": None}


def worker_lost_error(attempts: int) -> dict[str, Any]:
    return {"code": "worker_lost", "message": f"The worker stopped during the job {attempts} times; giving up."}


@dataclass(frozen=True)
class Recovery:
    """What a stale-job sweep did: ids to enqueue again and ids that ran out of attempts."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class JobStore(Protocol):
    """Storage contract: every state change is one atomic, conditional step (safe across processes)."""

    def create(self, record: JobRecord, inputs: Sequence[JobInput]) -> tuple[JobRecord, bool]:
        """Store a new job, or return the live job with the same owner + idempotency key (created=False)."""
        ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def find(self, owner: str, idempotency_key: str) -> JobRecord | None:
        """The live job `owner` submitted with this idempotency key."""
        ...

    def list_for_owner(self, owner: str, limit: int) -> list[JobRecord]: ...

    def inputs(self, job_id: str) -> list[JobInput]: ...

    def mark_enqueued(self, job_id: str) -> None: ...

    def claim(self, job_id: str, worker: str) -> JobRecord | None:
        """queued → running (attempts + 1), or None when the job is not queued (cancelled, taken, gone)."""
        ...

    def heartbeat(self, job_id: str, worker: str, attempt: int) -> bool:
        """Refresh a running job's lease; False when this attempt no longer owns the job."""
        ...

    def release(self, job_id: str, worker: str, attempt: int) -> bool:
        """running → queued without using up the attempt (the model was busy)."""
        ...

    def finish(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        status: JobStatus,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        """running → terminal for the (worker, attempt) that owns the job; None if cancelled or taken over."""
        ...

    def cancel(self, job_id: str) -> JobRecord | None: ...

    def recover(self, stale_before: float, is_dead: Callable[[str], bool]) -> Recovery:
        """Running jobs whose worker died or stopped heart-beating: back to queued, or failed when out of attempts."""
        ...

    def unsent(self, created_before: float) -> list[str]:
        """Queued jobs whose queue message was never sent (the submitter died in between)."""
        ...

    def set_callback(self, job_id: str, report: dict[str, Any]) -> None: ...

    def purge_expired(self) -> int: ...

    def close(self) -> None: ...


def new_job_id() -> str:
    return uuid.uuid4().hex


def fingerprint(kind: str, params: dict[str, Any], inputs: Sequence[JobInput]) -> str:
    """Identifies a request body, so a reused idempotency key with a different body is refused."""
    digest = hashlib.sha256()
    digest.update(json.dumps([kind, params], sort_keys=True, separators=(",", ":")).encode())
    for item in inputs:
        digest.update(hashlib.sha256(item.data).digest())
    return digest.hexdigest()


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def worker_name(label: str = "worker") -> str:
    """`host:pid:label:random` — unique per worker instance; host and pid let a restart spot its dead jobs."""
    return f"{socket.gethostname()}:{os.getpid()}:{label}:{uuid.uuid4().hex[:6]}"


def local_worker_is_dead(worker: str, alive_workers: Callable[[], set[str]]) -> bool:
    """True only when certain: the worker ran on this host and its process is gone (or was this pid, restarted)."""
    parts = worker.split(":")
    if len(parts) < 4 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return worker not in alive_workers()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False
