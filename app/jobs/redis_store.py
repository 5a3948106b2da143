"""Job records in Redis (QUEUE_URL=redis://...): one hash per job, expiring JOB_TTL after it finishes.

Keys (prefix `fvjobs:`): `job:{id}` hash, `inputs:{id}` hash of image bytes, `owner:{sub}` sorted set
of job ids by creation time, `idem:{sub}:{key}` the job id for an idempotency key, `running` and
`unsent` sets for the recovery sweep. Conditional transitions run as Lua scripts (atomic in Redis).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from app.jobs.records import (
    CANCELLED_ERROR,
    Clock,
    IdempotencyConflict,
    JobInput,
    JobRecord,
    JobStatus,
    Recovery,
    ended_fields,
    to_json,
    worker_lost_error,
)

PREFIX = "fvjobs:"

# KEYS: job, inputs, owner zset, idem key (or ""), unsent set. ARGV: id, created_at, fingerprint, field pairs...
_CREATE = """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    local key = ARGV[4] .. existing
    if redis.call('EXISTS', key) == 1 then
      local expires = redis.call('HGET', key, 'expires_at')
      if not expires or expires == '' or tonumber(expires) > tonumber(ARGV[2]) then
        if redis.call('HGET', key, 'fingerprint') ~= ARGV[3] then return {'conflict', existing} end
        return {'existing', existing}
      end
    end
  end
  redis.call('SET', KEYS[4], ARGV[1])
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('PERSIST', KEYS[3])
redis.call('SADD', KEYS[5], ARGV[1])
return {'created', ARGV[1]}
"""

# KEYS: job, running set. ARGV: id, worker, now
_CLAIM = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3], 'heartbeat_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return attempts
"""

# KEYS: job. ARGV: worker, attempt, now
_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[3])
return 1
"""

# KEYS: job, running set. ARGV: id, worker, attempt, new status, then field pairs
_TRANSITION = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[3] then return 0 end
local fields = {'status', ARGV[4]}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: job, running set, unsent set. ARGV: id, field pairs
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
local fields = {'status', 'cancelled'}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"""


class RedisJobStore:
    def __init__(self, url: str, ttl_s: float, clock: Clock = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._redis = redis.Redis.from_url(url)
        self._create = self._redis.register_script(_CREATE)
        self._claim = self._redis.register_script(_CLAIM)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._transition = self._redis.register_script(_TRANSITION)
        self._cancel = self._redis.register_script(_CANCEL)

    # -- keys ----------------------------------------------------------------------------------------------
    @staticmethod
    def _job(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def _inputs(job_id: str) -> str:
        return f"{PREFIX}inputs:{job_id}"

    @staticmethod
    def _owner(owner: str) -> str:
        return f"{PREFIX}owner:{owner}"

    @staticmethod
    def _idem(owner: str, key: str) -> str:
        # Hashed: a subject or key containing ':' must not collide with another pair.
        digest = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        return f"{PREFIX}idem:{digest}"

    _running = f"{PREFIX}running"
    _unsent = f"{PREFIX}unsent"

    def _members(self, key: str) -> list[str]:
        members: set[bytes] = self._redis.smembers(key)  # type: ignore[assignment]
        return [m.decode() for m in members]

    def _decode(self, raw: dict[bytes, bytes]) -> JobRecord | None:
        if not raw:
            return None
        record = JobRecord.from_row({k.decode(): v.decode() for k, v in raw.items()})
        return None if record.expired(self.clock()) else record

    def _expire_at(self, record: JobRecord) -> None:
        """Let Redis drop a finished job (and its idempotency key) when its TTL ends."""
        if record.expires_at is None:
            return
        # Relative to now: Redis's clock and this machine's may disagree; the record's own
        # `expires_at` decides what readers see, Redis only needs to drop the keys eventually.
        seconds = max(1, math.ceil(record.expires_at - self.clock()))
        pipe = self._redis.pipeline()
        pipe.expire(self._job(record.id), seconds)
        if record.idempotency_key is not None:
            pipe.expire(self._idem(record.owner, record.idempotency_key), seconds)
        pipe.delete(self._inputs(record.id))
        pipe.execute()

    @staticmethod
    def _pairs(values: dict[str, Any]) -> list[str]:
        flat: list[str] = []
        for key, value in values.items():
            flat += [key, "" if value is None else str(value)]
        return flat

    # -- create and read -----------------------------------------------------------------------------------
    def create(self, record: JobRecord, inputs: Sequence[JobInput]) -> tuple[JobRecord, bool]:
        if inputs:
            self._redis.hset(self._inputs(record.id), mapping={str(i): item.data for i, item in enumerate(inputs)})
        idem = self._idem(record.owner, record.idempotency_key) if record.idempotency_key is not None else ""
        outcome, job_id = self._create(
            keys=[self._job(record.id), self._inputs(record.id), self._owner(record.owner), idem, self._unsent],
            args=[
                record.id,
                record.created_at,
                record.fingerprint or "",
                f"{PREFIX}job:",
                *self._pairs(record.to_row()),
            ],
        )
        if outcome == b"created":
            return record, True
        self._redis.delete(self._inputs(record.id))
        if outcome == b"conflict":
            raise IdempotencyConflict()
        existing = self.get(job_id.decode())
        if existing is None:  # expired between the script and this read: submit again
            return self.create(record, inputs)
        return existing, False

    def get(self, job_id: str) -> JobRecord | None:
        return self._decode(self._redis.hgetall(self._job(job_id)))  # type: ignore[arg-type]

    def find(self, owner: str, idempotency_key: str) -> JobRecord | None:
        job_id = self._redis.get(self._idem(owner, idempotency_key))
        record = self.get(job_id.decode()) if isinstance(job_id, bytes) else None
        return record if record is not None and record.owner == owner else None

    def list_for_owner(self, owner: str, limit: int) -> list[JobRecord]:
        ids = [i.decode() for i in self._redis.zrevrange(self._owner(owner), 0, -1)]  # type: ignore[union-attr]
        records: list[JobRecord] = []
        gone: list[str] = []
        pipe = self._redis.pipeline()
        for job_id in ids:
            pipe.hgetall(self._job(job_id))
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
            record = self._decode(raw)
            if record is None:
                gone.append(job_id)
            elif len(records) < limit:
                records.append(record)
        if gone:
            self._redis.zrem(self._owner(owner), *gone)
        return records

    def inputs(self, job_id: str) -> list[JobInput]:
        record = self.get(job_id)
        raw: dict[bytes, bytes] = self._redis.hgetall(self._inputs(job_id))  # type: ignore[assignment]
        if record is None or not raw:
            return []
        return [JobInput(name, raw[str(i).encode()]) for i, name in enumerate(record.image_names)]

    # -- transitions ---------------------------------------------------------------------------------------
    def mark_enqueued(self, job_id: str) -> None:
        pipe = self._redis.pipeline()
        pipe.hset(self._job(job_id), "enqueued_at", self.clock())
        pipe.srem(self._unsent, job_id)
        pipe.execute()

    def claim(self, job_id: str, worker: str) -> JobRecord | None:
        attempts = self._claim(keys=[self._job(job_id), self._running], args=[job_id, worker, self.clock()])
        return self.get(job_id) if attempts else None

    def heartbeat(self, job_id: str, worker: str, attempt: int) -> bool:
        return bool(self._heartbeat(keys=[self._job(job_id)], args=[worker, attempt, self.clock()]))

    def release(self, job_id: str, worker: str, attempt: int) -> bool:
        fields = {"attempts": attempt - 1, "worker": None, "heartbeat_at": None, "enqueued_at": None}
        done = self._transition(
            keys=[self._job(job_id), self._running], args=[job_id, worker, attempt, "queued", *self._pairs(fields)]
        )
        if done:
            self._redis.sadd(self._unsent, job_id)
        return bool(done)

    def finish(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        status: JobStatus,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        fields = {"result": to_json(result), **ended_fields(self.clock(), self.ttl_s, error)}
        done = self._transition(
            keys=[self._job(job_id), self._running], args=[job_id, worker, attempt, status.value, *self._pairs(fields)]
        )
        return self._ended(job_id) if done else None

    def cancel(self, job_id: str) -> JobRecord | None:
        fields = ended_fields(self.clock(), self.ttl_s, CANCELLED_ERROR)
        done = self._cancel(keys=[self._job(job_id), self._running, self._unsent], args=[job_id, *self._pairs(fields)])
        return self._ended(job_id) if done else None

    def _ended(self, job_id: str) -> JobRecord | None:
        """The record just moved to a terminal state, with its Redis expiry set."""
        record = self.get(job_id)
        if record is not None:
            self._expire_at(record)
        return record

    def recover(self, stale_before: float, is_dead: Callable[[str], bool]) -> Recovery:
        recovery = Recovery()
        for raw_id in self._members(self._running):
            job_id = raw_id
            record = self.get(job_id)
            if record is None or record.status is not JobStatus.RUNNING:
                self._redis.srem(self._running, job_id)
                continue
            if (record.heartbeat_at or 0) >= stale_before and not is_dead(record.worker or ""):
                continue
            worker = record.worker or ""
            if record.attempts < record.max_attempts:
                fields = {"worker": None, "heartbeat_at": None, "enqueued_at": None}
                if self._transition(
                    keys=[self._job(job_id), self._running],
                    args=[job_id, worker, record.attempts, "queued", *self._pairs(fields)],
                ):
                    self._redis.sadd(self._unsent, job_id)
                    recovery.requeued.append(job_id)
                continue
            error = worker_lost_error(record.attempts)
            if self.finish(job_id, worker, record.attempts, JobStatus.FAILED, error=error) is not None:
                recovery.failed.append(job_id)
        return recovery

    def unsent(self, created_before: float) -> list[str]:
        ids: list[str] = []
        for raw_id in self._members(self._unsent):
            job_id = raw_id
            record = self.get(job_id)
            if record is None or record.status is not JobStatus.QUEUED:
                self._redis.srem(self._unsent, job_id)
            elif record.created_at < created_before:
                ids.append(job_id)
        return ids

    def set_callback(self, job_id: str, report: dict[str, Any]) -> None:
        if self._redis.exists(self._job(job_id)):
            self._redis.hset(self._job(job_id), "callback", to_json(report))

    def purge_expired(self) -> int:
        return 0  # Redis expires finished jobs itself (EXPIREAT set when they finish)

    def close(self) -> None:
        self._redis.close()
