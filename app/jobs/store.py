"""Job records in SQLite (embedded mode), next to the huey queue file; `build_store` picks the backend.

Every transition is one conditional UPDATE, so several processes on one machine (the server and
`python -m app worker`) can share the file safely; WAL mode lets readers run during writes.
The file is checked when opened and a damaged or emptied one is refused (`store_file.py`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.jobs.records import (
    CANCELLED_ERROR,
    Clock,
    IdempotencyConflict,
    JobInput,
    JobRecord,
    JobStatus,
    JobStore,
    Recovery,
    ended_fields,
    to_json,
    worker_lost_error,
)
from app.jobs.store_file import open_job_database

_SCHEMA = """
create table if not exists jobs (
    id text primary key,
    owner text not null,
    kind text not null,
    params text not null,
    image_names text not null,
    status text not null,
    idempotency_key text,
    fingerprint text,
    callback_url text,
    created_at real not null,
    enqueued_at real,
    started_at real,
    finished_at real,
    expires_at real,
    heartbeat_at real,
    attempts integer not null default 0,
    max_attempts integer not null,
    worker text,
    result text,
    error text,
    callback text
);
create unique index if not exists jobs_owner_idempotency on jobs (owner, idempotency_key)
    where idempotency_key is not null;
create index if not exists jobs_owner_created on jobs (owner, created_at);
create index if not exists jobs_status on jobs (status);
create index if not exists jobs_expires on jobs (expires_at) where expires_at is not null;
create table if not exists job_inputs (
    job_id text not null references jobs (id) on delete cascade,
    idx integer not null,
    name text not null,
    data blob not null,
    primary key (job_id, idx)
);
"""

_COLUMNS = (
    "id, owner, kind, params, image_names, status, idempotency_key, fingerprint, callback_url, created_at, "
    "enqueued_at, started_at, finished_at, expires_at, heartbeat_at, attempts, max_attempts, worker, result, "
    "error, callback"
)
_LIVE = "(expires_at is null or expires_at > ?)"


class SqliteJobStore:
    def __init__(self, path: Path, ttl_s: float, clock: Clock = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        # Checked (marker, integrity), WAL with full sync, incremental auto-vacuum: see store_file.py.
        self._conn = open_job_database(path, _SCHEMA)
        self._conn.row_factory = sqlite3.Row

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; `begin immediate` takes the write lock up front (no upgrade deadlocks)."""
        with self._lock:
            self._conn.execute("begin immediate")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("rollback")
                raise
            self._conn.execute("commit")

    def _one(self, sql: str, args: Sequence[Any]) -> JobRecord | None:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return JobRecord.from_row(dict(row)) if row is not None else None

    # -- create and read -----------------------------------------------------------------------------------
    def create(self, record: JobRecord, inputs: Sequence[JobInput]) -> tuple[JobRecord, bool]:
        now = self.clock()
        with self._tx() as conn:
            if record.idempotency_key is not None:
                row = conn.execute(
                    f"select {_COLUMNS} from jobs where owner = ? and idempotency_key = ?",
                    (record.owner, record.idempotency_key),
                ).fetchone()
                if row is not None:
                    existing = JobRecord.from_row(dict(row))
                    if not existing.expired(now):
                        if existing.fingerprint != record.fingerprint:
                            raise IdempotencyConflict()
                        return existing, False
                    conn.execute("delete from jobs where id = ?", (existing.id,))
            row_values = record.to_row()
            names = _COLUMNS.split(", ")
            conn.execute(
                f"insert into jobs ({_COLUMNS}) values ({', '.join('?' * len(names))})",
                [row_values[n] for n in names],
            )
            conn.executemany(
                "insert into job_inputs (job_id, idx, name, data) values (?, ?, ?, ?)",
                [(record.id, i, item.name, item.data) for i, item in enumerate(inputs)],
            )
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        return self._one(f"select {_COLUMNS} from jobs where id = ? and {_LIVE}", (job_id, self.clock()))

    def find(self, owner: str, idempotency_key: str) -> JobRecord | None:
        return self._one(
            f"select {_COLUMNS} from jobs where owner = ? and idempotency_key = ? and {_LIVE}",
            (owner, idempotency_key, self.clock()),
        )

    def list_for_owner(self, owner: str, limit: int) -> list[JobRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"select {_COLUMNS} from jobs where owner = ? and {_LIVE} order by created_at desc limit ?",
                (owner, self.clock(), limit),
            ).fetchall()
        return [JobRecord.from_row(dict(r)) for r in rows]

    def inputs(self, job_id: str) -> list[JobInput]:
        with self._lock:
            rows = self._conn.execute(
                "select name, data from job_inputs where job_id = ? order by idx", (job_id,)
            ).fetchall()
        return [JobInput(r["name"], bytes(r["data"])) for r in rows]

    # -- transitions ---------------------------------------------------------------------------------------
    def mark_enqueued(self, job_id: str) -> None:
        with self._tx() as conn:
            conn.execute("update jobs set enqueued_at = ? where id = ?", (self.clock(), job_id))

    def claim(self, job_id: str, worker: str) -> JobRecord | None:
        now = self.clock()
        with self._tx() as conn:
            row = conn.execute(
                "update jobs set status = 'running', attempts = attempts + 1, worker = ?, started_at = ?, "
                f"heartbeat_at = ? where id = ? and status = 'queued' returning {_COLUMNS}",
                (worker, now, now, job_id),
            ).fetchone()
        return JobRecord.from_row(dict(row)) if row is not None else None

    def heartbeat(self, job_id: str, worker: str, attempt: int) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                "update jobs set heartbeat_at = ? where id = ? and status = 'running' and worker = ? and attempts = ?",
                (self.clock(), job_id, worker, attempt),
            )
        return cursor.rowcount == 1

    def release(self, job_id: str, worker: str, attempt: int) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                "update jobs set status = 'queued', attempts = attempts - 1, worker = null, heartbeat_at = null, "
                "enqueued_at = null where id = ? and status = 'running' and worker = ? and attempts = ?",
                (job_id, worker, attempt),
            )
        return cursor.rowcount == 1

    def finish(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        status: JobStatus,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        fields = {"status": status.value, "result": to_json(result), **ended_fields(self.clock(), self.ttl_s, error)}
        with self._tx() as conn:
            return _end(conn, job_id, fields, "status = 'running' and worker = ? and attempts = ?", (worker, attempt))

    def cancel(self, job_id: str) -> JobRecord | None:
        fields = {"status": JobStatus.CANCELLED.value, **ended_fields(self.clock(), self.ttl_s, CANCELLED_ERROR)}
        with self._tx() as conn:
            return _end(conn, job_id, fields, "status in ('queued', 'running')", ())

    def recover(self, stale_before: float, is_dead: Callable[[str], bool]) -> Recovery:
        with self._lock:
            rows = self._conn.execute(
                "select id, worker, heartbeat_at, attempts, max_attempts from jobs where status = 'running'"
            ).fetchall()
        stale = [r for r in rows if (r["heartbeat_at"] or 0) < stale_before or is_dead(r["worker"] or "")]
        recovery = Recovery()
        for r in stale:
            with self._tx() as conn:
                if r["attempts"] < r["max_attempts"]:
                    cursor = conn.execute(
                        "update jobs set status = 'queued', worker = null, heartbeat_at = null, enqueued_at = null "
                        "where id = ? and status = 'running' and attempts = ?",
                        (r["id"], r["attempts"]),
                    )
                    if cursor.rowcount == 1:
                        recovery.requeued.append(r["id"])
                    continue
                error = worker_lost_error(r["attempts"])
                fields = {"status": JobStatus.FAILED.value, **ended_fields(self.clock(), self.ttl_s, error)}
                if _end(conn, r["id"], fields, "status = 'running' and attempts = ?", (r["attempts"],)) is not None:
                    recovery.failed.append(r["id"])
        return recovery

    def unsent(self, created_before: float) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "select id from jobs where status = 'queued' and enqueued_at is null and created_at < ?",
                (created_before,),
            ).fetchall()
        return [r["id"] for r in rows]

    def set_callback(self, job_id: str, report: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute("update jobs set callback = ? where id = ?", (to_json(report), job_id))

    def purge_expired(self) -> int:
        with self._tx() as conn:
            cursor = conn.execute("delete from jobs where expires_at is not null and expires_at <= ?", (self.clock(),))
        if cursor.rowcount:
            with self._lock:
                # Give the freed pages back to the file system (WAL: the file shrinks at the checkpoint).
                self._conn.executescript("pragma incremental_vacuum;")  # execute() frees one page per step
                self._conn.execute("pragma wal_checkpoint(truncate)")
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _end(
    conn: sqlite3.Connection, job_id: str, fields: Mapping[str, Any], condition: str, args: Sequence[Any]
) -> JobRecord | None:
    """Move a job to a terminal state when `condition` holds; its stored images are not needed any more."""
    assignments = ", ".join(f"{column} = ?" for column in fields)  # our own column names, never input
    row = conn.execute(
        f"update jobs set {assignments} where id = ? and {condition} returning {_COLUMNS}",
        (*fields.values(), job_id, *args),
    ).fetchone()
    if row is None:
        return None
    conn.execute("delete from job_inputs where job_id = ?", (job_id,))
    return JobRecord.from_row(dict(row))


def sqlite_store_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "jobs.sqlite3"


def check_sqlite_job_store(settings: Settings) -> None:
    """Open and close the SQLite store: `JobStoreDamaged` (with what to do) if it cannot be trusted."""
    SqliteJobStore(sqlite_store_path(settings), ttl_s=settings.job_ttl).close()


def build_store(settings: Settings, clock: Clock = time.time) -> JobStore:
    """SQLite under DATA_DIR, or Redis when QUEUE_URL is a redis:// URL."""
    if settings.queue_url:
        from app.jobs.redis_store import RedisJobStore

        return RedisJobStore(settings.queue_url, ttl_s=settings.job_ttl, clock=clock)
    return SqliteJobStore(sqlite_store_path(settings), ttl_s=settings.job_ttl, clock=clock)
