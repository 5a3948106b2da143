"""The job store's state machine, on SQLite and on a real Redis: the same contract, no model needed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.errors import NotFound
from app.jobs.queue import JsonSerializer
from app.jobs.records import (
    IdempotencyConflict,
    JobInput,
    JobRecord,
    JobStatus,
    JobStore,
    local_worker_is_dead,
    new_job_id,
    worker_name,
)
from app.jobs.redis_store import RedisJobStore
from app.jobs.store import SqliteJobStore
from tests.jobs_support import redis_server

TTL = 100.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def store_and_clock(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[JobStore, Clock]]:
    clock = Clock()
    store: JobStore
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "jobs.sqlite3", ttl_s=TTL, clock=clock)
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisJobStore(url, ttl_s=TTL, clock=clock)
        store._redis.flushdb()  # type: ignore[attr-defined]
    yield store, clock
    store.close()


def record(clock: Clock, owner: str = "alice", key: str | None = None, fingerprint: str = "f1") -> JobRecord:
    return JobRecord(
        id=new_job_id(),
        owner=owner,
        kind="analyze",
        params={"task": "<OD>", "text": None},
        image_names=["a.png", "b.png"],
        created_at=clock(),
        max_attempts=2,
        idempotency_key=key,
        fingerprint=fingerprint,
    )


INPUTS = [JobInput("a.png", b"\x89PNG-a"), JobInput("b.png", b"\x00\x01binary\xff")]


def test_life_cycle_and_results_read_any_number_of_times(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    job, created = store.create(record(clock), INPUTS)
    assert created
    assert store.inputs(job.id) == INPUTS  # bytes come back exactly, in order
    claimed = store.claim(job.id, "w1")
    assert claimed is not None and claimed.status is JobStatus.RUNNING and claimed.attempts == 1
    assert store.claim(job.id, "w2") is None  # a duplicate message finds nothing to claim
    clock.now += 5
    done = store.finish(job.id, "w1", 1, JobStatus.COMPLETE, result={"results": [1, 2]})
    assert done is not None and done.status is JobStatus.COMPLETE
    assert done.expires_at == clock.now + TTL
    for _ in range(3):
        again = store.get(job.id)
        assert again is not None and again.result == {"results": [1, 2]} and again.finished_at == clock.now
    assert store.inputs(job.id) == []  # images are dropped once the job is finished


def test_ttl_expiry_with_an_injected_clock(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    job, _ = store.create(record(clock), INPUTS)
    clock.now += 10 * TTL  # an unfinished job never expires
    assert store.get(job.id) is not None
    store.claim(job.id, "w1")
    store.finish(job.id, "w1", 1, JobStatus.COMPLETE, result=[])
    clock.now += TTL - 1
    assert store.get(job.id) is not None
    assert [r.id for r in store.list_for_owner("alice", 10)] == [job.id]
    clock.now += 1
    assert store.get(job.id) is None
    assert store.list_for_owner("alice", 10) == []


def test_finish_is_fenced_by_worker_and_attempt(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    job, _ = store.create(record(clock), INPUTS)
    store.claim(job.id, "w1")
    assert store.finish(job.id, "w2", 1, JobStatus.COMPLETE) is None  # not the owner
    assert store.finish(job.id, "w1", 2, JobStatus.COMPLETE) is None  # not this attempt
    assert not store.heartbeat(job.id, "w2", 1)
    assert store.heartbeat(job.id, "w1", 1)
    cancelled = store.cancel(job.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert store.finish(job.id, "w1", 1, JobStatus.COMPLETE, result="late") is None  # result discarded
    final = store.get(job.id)
    assert final is not None and final.status is JobStatus.CANCELLED and final.result is None
    assert store.cancel(job.id) is None  # already terminal


def test_release_gives_the_attempt_back(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    job, _ = store.create(record(clock), INPUTS)
    store.claim(job.id, "w1")
    assert store.release(job.id, "w1", 1)
    queued = store.get(job.id)
    assert queued is not None and queued.status is JobStatus.QUEUED and queued.attempts == 0
    again = store.claim(job.id, "w1")
    assert again is not None and again.attempts == 1


def test_recovery_requeues_then_fails_after_max_attempts(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    job, _ = store.create(record(clock), INPUTS)
    store.mark_enqueued(job.id)
    store.claim(job.id, "dead-1")
    clock.now += 1
    assert store.recover(stale_before=clock.now - 5, is_dead=lambda w: False).requeued == []  # heartbeat is fresh
    recovery = store.recover(stale_before=clock.now - 5, is_dead=lambda w: w == "dead-1")
    assert recovery.requeued == [job.id]
    assert store.unsent(clock.now + 1) == [job.id]  # it needs a new queue message
    store.mark_enqueued(job.id)
    assert store.unsent(clock.now + 1) == []
    store.claim(job.id, "dead-2")  # attempt 2 of 2
    clock.now += 100  # no heartbeat for 100 s: stale
    recovery = store.recover(stale_before=clock.now - 60, is_dead=lambda w: False)
    assert recovery.failed == [job.id]
    failed = store.get(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "worker_lost"


def test_idempotency_key_per_owner(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    first, created = store.create(record(clock, key="k-1"), INPUTS)
    assert created
    again, created = store.create(record(clock, key="k-1"), INPUTS)
    assert not created and again.id == first.id
    assert store.find("alice", "k-1") is not None and store.find("bob", "k-1") is None
    other, created = store.create(record(clock, owner="bob", key="k-1"), INPUTS)
    assert created and other.id != first.id
    with pytest.raises(IdempotencyConflict):
        store.create(record(clock, key="k-1", fingerprint="different"), INPUTS)
    # Once the job expired, the key may be used for a new job.
    store.claim(first.id, "w")
    store.finish(first.id, "w", 1, JobStatus.COMPLETE)
    clock.now += TTL + 1
    fresh, created = store.create(record(clock, key="k-1", fingerprint="different"), INPUTS)
    assert created and fresh.id != first.id


def test_owner_listing_is_newest_first_and_private(store_and_clock: tuple[JobStore, Clock]) -> None:
    store, clock = store_and_clock
    ids = []
    for _ in range(3):
        clock.now += 1
        ids.append(store.create(record(clock), INPUTS)[0].id)
    store.create(record(clock, owner="bob"), INPUTS)
    assert [r.id for r in store.list_for_owner("alice", 10)] == ids[::-1]
    assert [r.id for r in store.list_for_owner("alice", 2)] == ids[:0:-1]


def test_queue_messages_are_json_not_pickle() -> None:
    from datetime import datetime

    from huey.registry import Message

    message = Message("id-1", "app.jobs.queue.run_job", datetime(2030, 1, 2, 3, 4, 5), 0, 0, None, ("job-1",), {})
    data = JsonSerializer().serialize(message)
    assert data.startswith(b"{") and b"job-1" in data
    assert JsonSerializer().deserialize(data) == message


def test_a_dead_local_worker_is_recognised() -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    me = worker_name("server")
    host = me.split(":")[0]
    assert local_worker_is_dead(f"{host}:{dead_pid}:server:abc123", lambda: set())
    assert not local_worker_is_dead(me, lambda: {me})  # this process, still running it
    assert local_worker_is_dead(me, lambda: set())  # this pid, but a previous incarnation
    assert not local_worker_is_dead(f"other-host:{dead_pid}:server:abc123", lambda: set())  # cannot tell


def test_not_found_is_the_same_for_missing_and_foreign_jobs(tmp_path: Path) -> None:
    from app.core.config import Settings
    from app.jobs.queue import JobQueue

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    queue = JobQueue(settings)
    try:
        job, _ = queue.submit("alice", "analyze", {"task": "<OD>"}, INPUTS)
        assert queue.get(job.id, "alice").id == job.id
        with pytest.raises(NotFound) as foreign:
            queue.get(job.id, "mallory")
        with pytest.raises(NotFound) as missing:
            queue.get("nope", "mallory")
        assert foreign.value.code == missing.value.code == "job_not_found"
        assert queue.pending() == 1
    finally:
        queue.close()
