"""The SQLite job store file: WAL + full sync, refused when damaged or emptied, compacted after expiry.

Every test damages a real store file the way the hostile run did (truncate to 0 bytes, to half, garbage
over pages, deleted) and checks what the server does with it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.core.config import Settings
from app.jobs.queue import JobQueue, StoreUnavailable
from app.jobs.records import JobInput, JobRecord, JobStatus, new_job_id
from app.jobs.store import SqliteJobStore
from app.jobs.store_file import JobStoreDamaged, marker_path

BIG = JobInput("big.png", b"\x89PNG" + bytes(range(256)) * 2000)  # ~512 KB of stored image per job


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def new_record(clock: Clock) -> JobRecord:
    return JobRecord(
        id=new_job_id(), owner="alice", kind="analyze", params={"task": "<OD>"}, image_names=["big.png"],
        created_at=clock(), max_attempts=2,
    )  # fmt: skip


def store_with_jobs(path: Path, count: int = 20) -> tuple[SqliteJobStore, Clock, list[str]]:
    clock = Clock()
    store = SqliteJobStore(path, ttl_s=100, clock=clock)
    ids = [store.create(new_record(clock), [BIG])[0].id for _ in range(count)]
    return store, clock, ids


def test_the_store_runs_wal_with_full_sync_and_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store, _, _ = store_with_jobs(path, 1)
    try:
        conn = store._conn
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert conn.execute("pragma synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("pragma auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    finally:
        store.close()
    assert marker_path(path).exists()


def test_an_older_store_without_auto_vacuum_is_converted_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store, _, ids = store_with_jobs(path, 2)
    store.close()
    with sqlite3.connect(path) as conn:  # as the previous version left it
        conn.execute("pragma journal_mode=delete")
        conn.execute("pragma auto_vacuum=none")
        conn.execute("vacuum")
    reopened = SqliteJobStore(path, ttl_s=100)
    try:
        assert reopened._conn.execute("pragma auto_vacuum").fetchone()[0] == 2
        assert all(reopened.get(job_id) is not None for job_id in ids)
    finally:
        reopened.close()


@pytest.mark.parametrize("damage", ["truncate-0", "delete", "truncate-half", "garbage-pages", "foreign-db"])
def test_a_damaged_or_emptied_store_stops_the_server_with_what_to_do(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "jobs.sqlite3"
    store, _, _ = store_with_jobs(path)
    store.close()
    size = path.stat().st_size
    if damage == "truncate-0":
        path.write_bytes(b"")
    elif damage == "delete":
        path.unlink()
    elif damage == "truncate-half":
        with path.open("r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "garbage-pages":
        with path.open("r+b") as handle:
            for offset in range(4096, size, 4096 * 7):  # scribble over b-tree pages, not the header
                handle.seek(offset)
                handle.write(b"\xa5" * 512)
    else:  # a valid SQLite file that is not our store (someone replaced it)
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("create table other (x)")
    with pytest.raises(JobStoreDamaged) as refused:
        SqliteJobStore(path, ttl_s=100)
    message = refused.value.message
    assert str(path) in message and str(marker_path(path)) in message
    assert "backup" in message


def test_deleting_the_marker_is_the_way_to_start_empty(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store, _, _ = store_with_jobs(path, 1)
    store.close()
    path.write_bytes(b"")
    with pytest.raises(JobStoreDamaged):
        SqliteJobStore(path, ttl_s=100)
    marker_path(path).unlink()
    fresh = SqliteJobStore(path, ttl_s=100)
    try:
        assert fresh.list_for_owner("alice", 10) == []
    finally:
        fresh.close()
    assert marker_path(path).exists()


def test_serve_refuses_a_damaged_store_before_listening(tmp_path: Path) -> None:
    from app.serving.server import serve

    settings = Settings(_env_file=None, data_dir=tmp_path, preload=False)  # type: ignore[call-arg]
    store, _, _ = store_with_jobs(tmp_path / "jobs.sqlite3", 1)
    store.close()
    (tmp_path / "jobs.sqlite3").write_bytes(b"")
    with pytest.raises(JobStoreDamaged):
        serve(settings, port=18298)  # never reaches uvicorn: the check comes first


def test_pages_damaged_while_serving_give_503_store_unavailable(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    queue = JobQueue(settings)
    try:
        jobs = [queue.submit("alice", "analyze", {"task": "<OD>"}, [BIG])[0] for _ in range(10)]
        path = tmp_path / "jobs.sqlite3"
        queue.store._conn.execute("pragma wal_checkpoint(truncate)")  # type: ignore[attr-defined]
        size = path.stat().st_size
        with path.open("r+b") as handle:
            for offset in range(4096, size, 4096):
                handle.seek(offset)
                handle.write(b"\xa5" * 4096)
        # The running store's page cache still holds good pages; a fresh connection reads the damage, as the
        # server does once the cache moves on.
        store = queue.store
        store._conn.close()  # type: ignore[attr-defined]
        store._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)  # type: ignore[attr-defined]
        store._conn.row_factory = sqlite3.Row  # type: ignore[attr-defined]
        with pytest.raises(StoreUnavailable) as unavailable:
            for job in jobs:
                queue.get(job.id, "alice")
            queue.list("alice")
        assert (unavailable.value.http_status, unavailable.value.code) == (503, "store_unavailable")
    finally:
        queue.close()


def test_space_of_expired_jobs_is_given_back(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store, clock, ids = store_with_jobs(path, 40)
    try:
        store._conn.execute("pragma wal_checkpoint(truncate)")
        full = path.stat().st_size
        assert full > 40 * len(BIG.data)
        for job_id in ids:
            store.claim(job_id, "w1")
            store.finish(job_id, "w1", 1, JobStatus.COMPLETE, result={"ok": True})
        clock.now += 1000
        assert store.purge_expired() == len(ids)
        assert path.stat().st_size < full / 10
    finally:
        store.close()
