"""Model lifecycle seen through the API (readiness, lazy load, failed load) and client disconnects."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.testclient import TestClient

from app.api.disconnect import run_unless_disconnected
from app.core.config import Settings
from app.core.results import TextResult
from app.models.base import TaskRequest
from app.models.manager import ModelManager, ModelState
from app.serving.server import create_app
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.chat_support import make_services

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


class StubCaptioner:
    """A backend other than Florence-2 that serves captions, so it is the manager's primary one."""

    name = "stub-captioner"
    tasks = frozenset({"<CAPTION>"})
    model_id = "stub"
    library = "none"

    def load(self) -> None:
        return None

    def run(self, requests: Sequence[TaskRequest]) -> list[TextResult]:
        return [TextResult(request.spec.token, request.image_wh, text="a stub caption") for request in requests]

    def info(self) -> dict[str, Any]:
        return {"model": self.model_id}


def test_readyz_reports_on_the_primary_backend_whatever_its_name(tiny_settings: Settings) -> None:
    settings = api_settings(tiny_settings, preload=False)
    manager = ModelManager(settings, backends=[StubCaptioner()])
    with TestClient(create_app(settings, make_services(settings, manager))) as client:
        before = client.get("/readyz")
        assert (before.status_code, before.json()["error"]["code"]) == (503, "model_not_loaded")
        assert client.post("/api/v1/analyze", headers=auth_header(), json=BODY).status_code == 200
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert [(m["name"], m["state"]) for m in ready.json()["models"]] == [("stub-captioner", "ready")]


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
