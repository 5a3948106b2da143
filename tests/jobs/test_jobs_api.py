"""Jobs API in embedded (SQLite) mode on the tiny checkpoint: submit, poll, read, expire, cancel, own."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.config import Settings
from tests.api_support import (
    LoopbackServer,
    QuietHandler,
    api_settings,
    auth_header,
    make_token,
    png_bytes,
    running_app,
)
from tests.jobs_support import wait_for

JOBS = "/api/v1/jobs"
PNG = png_bytes((64, 48), "red")
BLUE = png_bytes((40, 30), "blue")
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
BLUE_URL = "data:image/png;base64," + base64.b64encode(BLUE).decode()
BROKEN_URL = "data:image/png;base64," + base64.b64encode(PNG[: len(PNG) // 2]).decode()
TERMINAL = ("complete", "failed", "cancelled")


class CallbackReceiver(LoopbackServer):
    """Records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.read_json())
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)
        self.hook_url = self.url("/hook")


def jobs_settings(tiny_settings: Settings, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "max_queue_size": 32, "fetch_allow_networks": "127.0.0.1/32"}
    return api_settings(tiny_settings, **{**values, **overrides})


@pytest.fixture(scope="module")
def served(
    classify_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, TestClient]]:
    with running_app(jobs_settings(classify_settings, tmp_path_factory.mktemp("jobs-data"))) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: tuple[FastAPI, TestClient]) -> TestClient:
    return served[1]


def submit(client: TestClient, body: dict[str, Any], sub: str = "alice", **headers: str) -> dict[str, Any]:
    response = client.post(JOBS, headers={**auth_header(make_token(sub)), **headers}, json=body)
    assert response.status_code == 202, response.text
    return {**response.json(), "_headers": dict(response.headers)}


def wait_done(client: TestClient, job_id: str, sub: str = "alice", path: str = JOBS) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"{path}/{job_id}", headers=auth_header(make_token(sub))).json()
        return body if body["status"] in TERMINAL else None

    return wait_for(finished, 60, f"job {job_id} to finish")


def test_submit_poll_and_read_the_result_twice(client: TestClient) -> None:
    created = submit(client, {"kind": "analyze", "task": "CAPTION", "images": [DATA_URL, BLUE_URL]})
    assert created["status"] == "queued"
    assert created["_headers"]["location"] == f"{JOBS}/{created['id']}"
    done = wait_done(client, created["id"])
    assert done["status"] == "complete" and done["attempts"] == 1 and done["images"] == 2
    assert done["created_at"] <= done["started_at"] <= done["finished_at"] < done["expires_at"]
    # The job's answer is the synchronous route's answer for the same request.
    sync = client.post(
        "/api/v1/analyze", headers=auth_header(), json={"task": "CAPTION", "images": [DATA_URL, BLUE_URL]}
    ).json()
    assert done["result"] == {"task": "<CAPTION>", "results": sync["results"]}
    again = client.get(f"{JOBS}/{created['id']}", headers=auth_header()).json()
    assert again == done


def test_per_image_errors_and_a_job_where_every_image_fails(client: TestClient) -> None:
    partial = wait_done(
        client, submit(client, {"kind": "analyze", "task": "OD", "images": [DATA_URL, BROKEN_URL]})["id"]
    )
    assert partial["status"] == "complete"
    first, second = partial["result"]["results"]
    assert first["kind"] == "detections" and first["image_wh"] == [64, 48]
    assert second["name"] == "images[1]" and second["error"]["code"] == "corrupt_image"
    # Every image broken: refused at once, nothing is queued.
    response = client.post(JOBS, headers=auth_header(), json={"kind": "analyze", "task": "OD", "images": [BROKEN_URL]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "corrupt_image"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"task": "OD", "images": [DATA_URL]}, 400, "unknown_job_kind"),
        ({"kind": "paint", "task": "OD", "images": [DATA_URL]}, 400, "unknown_job_kind"),
        ({"kind": "analyze", "images": [DATA_URL]}, 422, "validation_error"),
        ({"kind": "analyze", "task": "NOPE", "images": [DATA_URL]}, 400, "unknown_task"),
        ({"kind": "analyze", "task": "OD", "images": [DATA_URL], "extra": 1}, 422, "validation_error"),
    ],
)
def test_bad_submissions_are_refused_before_queueing(
    client: TestClient, body: dict[str, Any], status: int, code: str
) -> None:
    response = client.post(JOBS, headers=auth_header(), json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    not_json = client.post(JOBS, headers={**auth_header(), "Content-Type": "text/plain"}, content=b"hi")
    assert not_json.status_code == 415


def test_a_job_is_visible_only_to_its_subject(client: TestClient) -> None:
    job = submit(client, {"kind": "analyze", "task": "CAPTION", "images": [DATA_URL]}, sub="alice")
    wait_done(client, job["id"], sub="alice")
    for method in ("GET", "DELETE"):
        response = client.request(method, f"{JOBS}/{job['id']}", headers=auth_header(make_token("mallory")))
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    assert client.get(JOBS, headers=auth_header(make_token("mallory"))).json() == {"jobs": []}
    listed = client.get(JOBS, headers=auth_header(make_token("alice"))).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed] and all("result" not in j for j in listed)
    assert client.get(f"{JOBS}/{job['id']}").status_code == 401


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    body = {"kind": "analyze", "task": "CAPTION", "images": [BLUE_URL]}
    first = submit(client, body, **{"Idempotency-Key": "upload-42"})
    second = submit(client, body, **{"Idempotency-Key": "upload-42"})
    assert second["id"] == first["id"] and second["_headers"].get("idempotent-replayed") == "true"
    other_subject = submit(client, body, sub="bob", **{"Idempotency-Key": "upload-42"})
    assert other_subject["id"] != first["id"]
    conflict = client.post(JOBS, headers={**auth_header(), "Idempotency-Key": "upload-42"}, json={**body, "task": "OD"})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"
    wait_done(client, first["id"])
    assert submit(client, body, **{"Idempotency-Key": "upload-42"})["id"] == first["id"]  # also once finished


def test_results_expire_after_job_ttl(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    job = submit(client, {"kind": "analyze", "task": "CAPTION", "images": [DATA_URL]})
    done = wait_done(client, job["id"])
    store = app.state.jobs.queue.store
    ttl = app.state.api.settings.job_ttl
    finished = store.get(job["id"]).finished_at
    real_clock = store.clock
    try:
        store.clock = lambda: finished + ttl - 1
        assert client.get(f"{JOBS}/{job['id']}", headers=auth_header()).json() == done
        store.clock = lambda: finished + ttl
        assert client.get(f"{JOBS}/{job['id']}", headers=auth_header()).status_code == 404
        assert job["id"] not in [j["id"] for j in client.get(JOBS, headers=auth_header()).json()["jobs"]]
    finally:
        store.clock = real_clock


def test_callback_receives_the_finished_job_and_private_targets_are_refused(client: TestClient) -> None:
    with CallbackReceiver() as receiver:
        body = {"kind": "analyze", "task": "CAPTION", "images": [DATA_URL], "callback_url": receiver.hook_url}
        job = submit(client, body)
        wait_for(lambda: receiver.bodies, 30, "the callback")
        delivered = receiver.bodies[0]
        assert delivered["id"] == job["id"] and delivered["status"] == "complete"
        assert delivered["result"]["results"][0]["kind"] == "text"

        def reported() -> dict[str, Any] | None:
            view = client.get(f"{JOBS}/{job['id']}", headers=auth_header()).json()
            return view if view["callback"]["status"] == "delivered" else None

        assert wait_for(reported, 10, "the delivery report")["callback"]["attempts"] == 1
    # Same SSRF rules as image URLs: only 127.0.0.1 is allowlisted in these settings.
    for target in ("http://169.254.169.254/latest", "http://[::1]:9/x", "ftp://example.com/x"):
        response = client.post(JOBS, headers=auth_header(), json={**body, "callback_url": target})
        assert response.status_code in (400, 403), target
        assert "callback_url" in response.json()["error"]["message"]


def test_classify_and_zero_shot_jobs_answer_like_the_synchronous_routes(client: TestClient) -> None:
    job = submit(client, {"kind": "classify", "images": [DATA_URL], "numberofpredictions": 4, "language": "de"})
    done = wait_done(client, job["id"])
    sync = client.post(
        "/api/v1/classify",
        headers=auth_header(),
        json={"images": [DATA_URL], "numberofpredictions": 4, "language": "de"},
    ).json()
    assert done["status"] == "complete"
    assert done["result"]["results"][0]["predictions"] == sync["results"][0]["predictions"]
    assert len(sync["results"][0]["predictions"]) == 4

    labels = ["a cat", "a dog", "a car"]
    job = submit(client, {"kind": "zero-shot", "image_data": DATA_URL, "labels": labels})
    done = wait_done(client, job["id"])
    sync = client.post("/api/zero-shot", headers=auth_header(), json={"image_data": DATA_URL, "labels": labels})
    assert done["result"]["results"][0]["result"] == sync.json()["result"]
    bad = client.post(JOBS, headers=auth_header(), json={"kind": "classify", "images": [DATA_URL], "language": "xx"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_language"


def test_cancel_and_restart_lose_no_job(tiny_settings: Settings, tmp_path: Path) -> None:
    """Jobs queued while no worker runs survive a stop; a job whose worker died is run again."""
    import subprocess
    import sys

    from app.jobs.records import worker_name

    settings = jobs_settings(tiny_settings, tmp_path, embedded_worker=False, preload=False)
    with running_app(settings) as (app, client):
        queued = [submit(client, {"kind": "analyze", "task": "CAPTION", "images": [DATA_URL]})["id"] for _ in range(3)]
        doomed = submit(client, {"kind": "analyze", "task": "OD", "images": [BLUE_URL]})["id"]
        cancelled = client.delete(f"{JOBS}/{doomed}", headers=auth_header()).json()
        assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
        # A job a crashed process was running: claimed by a worker whose pid no longer exists.
        crashed = submit(client, {"kind": "analyze", "task": "OD", "images": [DATA_URL]})["id"]
        dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                      capture_output=True, text=True).stdout)  # fmt: skip
        host = worker_name().split(":")[0]
        assert app.state.jobs.queue.store.claim(crashed, f"{host}:{dead_pid}:server:dead00") is not None
        assert client.get(f"{JOBS}/{crashed}", headers=auth_header()).json()["status"] == "running"

    with running_app(jobs_settings(tiny_settings, tmp_path)) as (_, client):
        for job_id in queued:
            done = wait_done(client, job_id)
            assert (done["status"], done["attempts"]) == ("complete", 1)
        recovered = wait_done(client, crashed)
        assert (recovered["status"], recovered["attempts"]) == ("complete", 2)
        assert client.get(f"{JOBS}/{doomed}", headers=auth_header()).json()["status"] == "cancelled"

        # A graceful stop in the middle of a queue: the job in hand finishes, the rest wait.
        burst = [submit(client, {"kind": "analyze", "task": "CAPTION", "images": [BLUE_URL]})["id"] for _ in range(4)]
    with running_app(jobs_settings(tiny_settings, tmp_path)) as (_, client):
        for job_id in burst:
            done = wait_done(client, job_id)
            assert (done["status"], done["attempts"]) == ("complete", 1)


def test_an_unreachable_queue_is_a_503_not_a_crash(tiny_settings: Settings, tmp_path: Path) -> None:
    from tests.jobs_support import REDIS_PORTS, free_port

    nothing_there = f"redis://127.0.0.1:{free_port(REDIS_PORTS)}/0"
    settings = jobs_settings(tiny_settings, tmp_path, queue_url=nothing_there, preload=False)
    with running_app(settings) as (_, client):
        response = client.post(
            JOBS, headers=auth_header(), json={"kind": "analyze", "task": "OD", "images": [DATA_URL]}
        )
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_unavailable"
        assert response.headers["retry-after"] == "5"
        assert client.get(f"{JOBS}/abc", headers=auth_header()).status_code == 503
        assert client.get("/healthz").status_code == 200  # the rest of the server is up


def test_analyze_runs_classification_tasks_like_their_legacy_kinds(client: TestClient) -> None:
    legacy = wait_done(
        client,
        submit(client, {"kind": "classify", "images": [DATA_URL], "numberofpredictions": 2, "language": "de"})["id"],
    )
    analyzed = wait_done(
        client,
        submit(client, {"kind": "analyze", "task": "CLASSIFY", "images": [DATA_URL], "top_n": 2, "language": "de"})[
            "id"
        ],
    )
    assert analyzed["kind"] == "analyze" and analyzed["result"]["task"] == "<CLASSIFY>"
    [mine], [theirs] = analyzed["result"]["results"], legacy["result"]["results"]
    assert {**mine, "duration": 0} == {**theirs, "duration": 0} and len(mine["predictions"]) == 2
    assert "task" not in legacy["result"]  # the legacy kinds keep their stored shape

    labels, categories = ["a cat", "a dog", "a car"], {"a cat": "animal", "a dog": "animal"}
    legacy = wait_done(
        client,
        submit(client, {"kind": "zero_shot", "image_data": DATA_URL, "labels": labels, "categories": categories})["id"],
    )
    analyzed = wait_done(
        client,
        submit(
            client,
            {
                "kind": "analyze",
                "task": "zero-shot",
                "images": [DATA_URL],
                "labels": labels,
                "categories": categories,
                "templates": ["{}"],  # the labels as given, as the legacy kind scores them
            },
        )["id"],
    )
    sync = client.post(
        "/api/v1/analyze",
        headers=auth_header(),
        json={
            "task": "ZERO_SHOT",
            "images": [DATA_URL],
            "labels": labels,
            "categories": categories,
            "templates": ["{}"],
        },
    ).json()
    assert legacy["kind"] == "zero-shot" and analyzed["result"]["task"] == "<ZERO_SHOT>"
    assert analyzed["result"]["results"][0]["result"] == legacy["result"]["results"][0]["result"]
    assert analyzed["result"]["results"][0]["result"] == sync["results"][0]["result"]
    assert set(analyzed["result"]["results"][0]["categories"]) == {"animal", "a car"}  # an ungrouped label stands alone


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"task": "OD", "top_n": 3}, "unexpected_options"),
        ({"task": "ZERO_SHOT"}, "missing_labels"),
        ({"task": "ZERO_SHOT", "labels": ["a"], "templates": ["no placeholder"]}, "invalid_template"),
        ({"task": "CLASSIFY", "language": "xx"}, "unknown_language"),
        ({"task": "CAPTION", "labels": ["a cat"]}, "unexpected_labels"),
        ({"task": "OD", "multi_label": True}, "unexpected_labels"),
    ],
)
def test_analyze_params_are_checked_for_their_task_before_queueing(
    served: tuple[FastAPI, TestClient], body: dict[str, Any], code: str
) -> None:
    app, client = served
    before = len(app.state.jobs.queue.list("alice", 500))
    response = client.post(JOBS, headers=auth_header(), json={"kind": "analyze", "images": [DATA_URL], **body})
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    assert len(app.state.jobs.queue.list("alice", 500)) == before


def test_a_record_written_by_the_previous_version_still_runs(served: tuple[FastAPI, TestClient]) -> None:
    """Params as the previous version stored them (plain dicts, `input_errors` by index) run unchanged."""
    from app.jobs.records import JobInput

    app, client = served
    queue = app.state.jobs.queue
    old_params = {
        "task": "<OD>",
        "text": None,
        "region": None,
        "annotate": False,
        "input_errors": {"1": {"code": "corrupt_image", "message": "Broken.", "status": 400}},
    }
    inputs = [JobInput("old.png", PNG), JobInput("broken.png", b"")]
    record, _ = queue.submit("alice", "analyze", old_params, inputs, None, None, "old-analyze")
    done = wait_done(client, record.id)
    first, second = done["result"]["results"]
    assert done["status"] == "complete" and done["result"]["task"] == "<OD>" and first["kind"] == "detections"
    assert second["name"] == "broken.png" and second["error"]["code"] == "corrupt_image"

    record, _ = queue.submit("alice", "classify", {"top_n": 2, "language": "en"}, inputs[:1], None, None, "old-c")
    predictions = wait_done(client, record.id)["result"]["results"][0]["predictions"]
    assert len(predictions) == 2 and predictions[0]["probability"] >= predictions[1]["probability"]

    record, _ = queue.submit("alice", "classify", {"top_n": "many"}, inputs[:1], None, None, "unreadable")
    failed = wait_done(client, record.id)
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_job_params"
