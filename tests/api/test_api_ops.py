"""Model lifecycle seen through the API (readiness, lazy load, failed load) and client disconnects."""

from __future__ import annotations

import asyncio
import base64
import threading

from fastapi import Request

from app.api.disconnect import run_unless_disconnected
from app.core.config import Settings
from app.models.manager import ModelManager, ModelState
from tests.api_support import api_settings, auth_header, png_bytes, running_app

BODY = {"task": "caption", "images": [{"base64": base64.b64encode(png_bytes()).decode()}]}


def request_that_leaves_on(event: asyncio.Event) -> Request:
    """A request whose client disconnects once `event` is set (its body already read)."""

    async def receive() -> dict[str, object]:
        await event.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/api/v1/analyze", "headers": []}, receive)


def test_without_preload_readyz_reports_and_never_loads(tiny_settings: Settings) -> None:
    with running_app(api_settings(tiny_settings, preload=False)) as (app, client):
        manager = app.state.services.manager
        for _ in range(3):
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "model_not_loaded"
        assert manager.state() is ModelState.NOT_LOADED
        # The first analysis loads the model lazily; readiness follows.
        assert client.post("/api/v1/analyze", headers=auth_header(), json=BODY).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_model_that_cannot_load_is_reported_not_crashed(tiny_settings: Settings) -> None:
    settings = api_settings(tiny_settings, model_id="/nonexistent/florence-checkpoint")
    with running_app(settings) as (_, client):
        ready = client.get("/readyz")
        analysis = client.post("/api/v1/analyze", headers=auth_header(), json=BODY)
        models = client.get("/api/v1/models", headers=auth_header()).json()
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "model_missing"  # the same code the analysis answers
    assert "does not exist" in ready.json()["error"]["message"]
    assert (analysis.status_code, analysis.json()["error"]["code"]) == (503, "model_missing")
    assert models["models"][0]["state"] == "failed"


def test_a_client_that_disconnects_cancels_work_that_has_not_started(tiny_settings: Settings) -> None:
    """The request's model work is still queued behind another job when its client goes away."""
    manager = ModelManager(api_settings(tiny_settings))  # no model needed for queued generic work
    started_late = threading.Event()
    release = threading.Event()

    async def scenario() -> tuple[bool, object]:
        disconnect = asyncio.Event()
        request = request_that_leaves_on(disconnect)
        blocker = manager.submit(release.wait)  # the inference thread is busy
        outcome = asyncio.ensure_future(run_unless_disconnected(request, manager.call_async(started_late.set)))
        for _ in range(100):  # let the tasks run until the work is queued (no wall-clock waiting)
            if manager.queue_depth == 2:
                break
            await asyncio.sleep(0)
        assert manager.queue_depth == 2
        disconnect.set()
        result = await outcome
        release.set()
        await asyncio.wrap_future(blocker)
        return result

    try:
        finished, value = asyncio.run(scenario())
        manager.submit(lambda: None).result(timeout=10)  # the queue has drained past the cancelled job
    finally:
        manager.shutdown()
    assert (finished, value) == (False, None)
    assert not started_late.is_set()
    assert manager.queue_depth == 0


def test_work_that_finishes_is_returned(tiny_settings: Settings) -> None:
    manager = ModelManager(api_settings(tiny_settings))

    async def scenario() -> tuple[bool, object]:
        request = request_that_leaves_on(asyncio.Event())  # never set: the client stays
        return await run_unless_disconnected(request, manager.call_async(lambda: 42))

    try:
        assert asyncio.run(scenario()) == (True, 42)
    finally:
        manager.shutdown()
