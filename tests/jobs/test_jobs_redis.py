"""Redis mode against a real redis-server: the API only enqueues, two `python -m app worker` processes
take the jobs; one is killed with SIGKILL in the middle of a job and every job still finishes."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import pytest

from app.core.config import Settings
from app.jobs.records import JobRecord
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.jobs_support import REPO, redis_server, start_worker, stop_process, wait_for, worker_env

IMAGES = ["data:image/png;base64," + base64.b64encode(png_bytes((48 + i, 40), c)).decode() for i, c in
          enumerate(["red", "green", "blue"])]  # fmt: skip
TERMINAL = ("complete", "failed", "cancelled")


@pytest.mark.slow
def test_two_workers_and_a_kill_9_lose_no_job(tiny_settings: Settings, tmp_path: Path) -> None:
    with redis_server() as url:
        # 32-token answers: an 8-image job runs long enough (a second or more) to be killed mid-way.
        env = worker_env(tiny_settings, QUEUE_URL=url, JOB_LEASE_S="2", MAX_NEW_TOKENS="32", DATA_DIR=str(tmp_path))
        logs = REPO / "test-artifacts" / "jobs-redis"
        logs.mkdir(parents=True, exist_ok=True)
        workers = {name: start_worker(name, env, logs) for name in ("w1", "w2")}
        settings = api_settings(tiny_settings, queue_url=url, data_dir=tmp_path, preload=False, job_lease_s=2)
        try:
            with running_app(settings) as (app, client):
                assert app.state.jobs.runner is None  # Redis mode: this process only enqueues
                store = app.state.jobs.queue.store
                ids = []
                for i in range(4):
                    # The first job is the long one (8 images): it is the one interrupted.
                    images = [IMAGES[k % 3] for k in range(8)] if i == 0 else [IMAGES[i % 3]]
                    body = {"kind": "analyze", "task": "CAPTION", "images": images}
                    response = client.post("/api/v1/jobs", headers=auth_header(), json=body)
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["id"])

                def long_job_running() -> JobRecord | None:
                    record = store.get(ids[0])
                    return record if record is not None and record.status.value == "running" else None

                victim_job = wait_for(long_job_running, 120, "a worker to start the long job", interval_s=0.01)
                victim = next(name for name in workers if f":{name}:" in (victim_job.worker or ""))
                workers[victim].kill()  # SIGKILL: no goodbye, the job stays "running" in Redis
                workers[victim].wait()
                survivor = next(name for name in workers if name != victim)

                def all_finished() -> list[JobRecord] | None:
                    records = [store.get(job_id) for job_id in ids]
                    done = [r for r in records if r is not None and r.status.value in TERMINAL]
                    return done if len(done) == len(ids) else None

                finished = wait_for(all_finished, 120, "every job to reach a terminal state", interval_s=0.2)
                assert [r.status.value for r in finished] == ["complete"] * len(ids)
                rerun = next(r for r in finished if r.id == victim_job.id)
                assert rerun.attempts == 2 and f":{survivor}:" in (rerun.worker or "")
                view = client.get(f"/api/v1/jobs/{rerun.id}", headers=auth_header()).json()
                assert view["status"] == "complete" and len(view["result"]["results"]) == 8

                # SIGTERM is graceful: the job in hand is finished, then the worker exits 0.
                last = client.post(
                    "/api/v1/jobs",
                    headers=auth_header(),
                    json={"kind": "analyze", "task": "OD", "images": IMAGES},
                ).json()["id"]
                wait_for(
                    lambda: (r := store.get(last)) is not None and r.status.value == "running", 60, "last job", 0.01
                )
                assert stop_process(workers[survivor], signal.SIGTERM) == 0
                final = store.get(last)
                assert final is not None and final.status.value == "complete" and final.attempts == 1
            log = (logs / f"{survivor}.log").read_text()
            assert f"job {victim_job.id} started" in log and "attempt 2/3" in log  # progress lines
            assert "stopped after" in log
        finally:
            for process in workers.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
