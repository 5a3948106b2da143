"""The chat and the job worker decode images under the same pixel budget as the API (issue 13, item 1):
the same per-request limit and message, and the same in-flight budget, shared by the whole process."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.chat.flow import ChatFlow
from app.chat.inputs import Upload
from app.chat.session import ChatSession
from app.core.config import Settings
from app.jobs import runner as runner_module
from app.jobs.queue import JobQueue
from app.jobs.records import JobInput, JobStatus
from app.jobs.runner import JobRunner
from app.models.manager import ModelManager
from app.services.container import Services
from app.services.pixel_budget import PixelBudget
from tests.chat_support import RecordingUI, run, save_upload

PHOTO_PIXELS = 451 * 300  # Chelsea the cat (the `photo` fixture)


def services_with(settings: Settings, manager: ModelManager, budget: PixelBudget) -> Services:
    return Services.from_manager(settings, manager, pixels=budget)


def test_the_server_shares_one_budget_between_api_chat_and_jobs(tiny_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from app.serving.server import create_app

    app = create_app(tiny_settings.model_copy(update={"preload": False, "embedded_worker": False}))
    with TestClient(app):
        services: Services = app.state.services
        assert app.state.api.pixels is services.pixels
        assert services.pixels.per_request == tiny_settings.max_request_pixels


# -- chat ------------------------------------------------------------------------------------------------
def test_a_chat_message_over_the_per_request_budget_is_refused_before_decoding(
    tiny_settings: Settings, tiny_manager: ModelManager, photo: Image.Image, tmp_path: Path
) -> None:
    budget = PixelBudget(per_request=2 * PHOTO_PIXELS - 1, in_flight=10 * PHOTO_PIXELS)
    services = services_with(tiny_settings, tiny_manager, budget)
    uploads = [save_upload(photo, tmp_path, "a.png"), save_upload(photo, tmp_path, "b.png")]
    session, ui = ChatSession(identity="t"), RecordingUI()

    run(ChatFlow(services).on_message(session, ui, "", uploads, "CAPTION"))

    (notice,) = ui.notices
    assert notice.startswith("**Too much at once.**")
    assert f"decode to {2 * PHOTO_PIXELS:,} pixels; at most {2 * PHOTO_PIXELS - 1:,}" in notice
    assert session.images == [] and ui.steps == [] and ui.replies == []  # nothing was decoded or run
    assert budget.used == 0

    one = ChatSession(identity="t")
    run(ChatFlow(services).on_message(one, RecordingUI(), "", uploads[:1], "CAPTION"))  # one image fits
    assert len(one.images) == 1


def test_a_chat_request_holds_its_pixels_while_the_model_runs_and_gives_them_back(
    tiny_settings: Settings, tiny_manager: ModelManager, cat_upload: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = PixelBudget(per_request=PHOTO_PIXELS, in_flight=PHOTO_PIXELS)
    services = services_with(tiny_settings, tiny_manager, budget)
    held_during_model: list[int] = []
    real_analyze = services.analysis.analyze_async

    async def recording_analyze(*args: Any, **kwargs: Any) -> Any:
        held_during_model.append(budget.used)
        return await real_analyze(*args, **kwargs)  # the real model call

    monkeypatch.setattr(services.analysis, "analyze_async", recording_analyze)
    session, ui = ChatSession(identity="t"), RecordingUI()
    run(ChatFlow(services).on_message(session, ui, "", [cat_upload], "CAPTION"))
    run(ChatFlow(services).on_follow_up(session, ui, "OD"))  # the session's image, decoded again

    assert held_during_model == [PHOTO_PIXELS, PHOTO_PIXELS]
    assert len(ui.replies) == 2 and ui.notices == []
    assert budget.used == 0


def test_a_chat_message_waits_for_the_in_flight_budget_then_runs(
    tiny_settings: Settings, tiny_manager: ModelManager, cat_upload: Upload
) -> None:
    budget = PixelBudget(per_request=PHOTO_PIXELS, in_flight=PHOTO_PIXELS)
    services = services_with(tiny_settings, tiny_manager, budget)
    session, ui = ChatSession(identity="t"), RecordingUI()

    async def scenario() -> None:
        release = asyncio.Event()
        holding = asyncio.Event()

        async def other_request() -> None:  # an API request holding the whole budget
            async with budget.hold(PHOTO_PIXELS):
                holding.set()
                await release.wait()

        other = asyncio.create_task(other_request())
        await holding.wait()
        message = asyncio.create_task(ChatFlow(services).on_message(session, ui, "", [cat_upload], "CAPTION"))
        while budget.waiting == 0:  # the message reads the upload's header in a thread, then queues
            await asyncio.sleep(0.01)
        assert ui.steps == [] and ui.replies == [] and session.images == []  # not decoded while it waits
        release.set()
        await asyncio.gather(other, message)

    run(scenario())
    assert len(ui.replies) == 1 and ui.notices == []
    assert budget.used == 0 and budget.waiting == 0


def test_a_chat_message_that_cannot_get_pixels_in_time_is_told_busy(
    tiny_settings: Settings, tiny_manager: ModelManager, cat_upload: Upload
) -> None:
    budget = PixelBudget(per_request=PHOTO_PIXELS, in_flight=PHOTO_PIXELS, max_wait_s=0)
    services = services_with(tiny_settings, tiny_manager, budget)
    session, ui = ChatSession(identity="t"), RecordingUI()

    async def scenario() -> None:
        async with budget.hold(1):
            await ChatFlow(services).on_message(session, ui, "", [cat_upload], "CAPTION")

    run(scenario())
    (notice,) = ui.notices
    assert notice == ("**Busy.** The server is decoding as many images as its memory budget allows; try again shortly.")
    assert ui.replies == [] and session.images == []
    assert budget.used == 0 and budget.waiting == 0


# -- the job worker ----------------------------------------------------------------------------------------
def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def job_parts(
    tiny_settings: Settings, tiny_manager: ModelManager, tmp_path: Path
) -> Iterator[tuple[JobQueue, Settings, ModelManager]]:
    settings = tiny_settings.model_copy(update={"data_dir": tmp_path})
    queue = JobQueue(settings)
    try:
        yield queue, settings, tiny_manager
    finally:
        queue.close()


def _runner(parts: tuple[JobQueue, Settings, ModelManager], budget: PixelBudget) -> JobRunner:
    queue, settings, manager = parts
    return JobRunner(queue, services_with(settings, manager, budget), "test-worker")


def test_a_job_over_the_per_request_budget_fails_with_the_api_code(
    job_parts: tuple[JobQueue, Settings, ModelManager], photo: Image.Image
) -> None:
    queue = job_parts[0]
    budget = PixelBudget(per_request=2 * PHOTO_PIXELS - 1, in_flight=10 * PHOTO_PIXELS)
    runner = _runner(job_parts, budget)
    inputs = [JobInput("a.png", _png(photo)), JobInput("b.png", _png(photo))]
    job, _ = queue.submit("alice", "analyze", {"task": "<CAPTION>"}, inputs)
    try:
        runner(job.id)
    finally:
        runner.close()
    finished = queue.get(job.id, "alice")
    assert finished.status is JobStatus.FAILED and finished.error is not None
    assert (finished.error["code"], finished.error["status"]) == ("request_too_many_pixels", 413)
    assert f"at most {2 * PHOTO_PIXELS - 1:,}" in finished.error["message"]
    assert budget.used == 0


def test_a_job_waits_for_the_in_flight_budget_and_is_queued_again_when_it_stays_full(
    job_parts: tuple[JobQueue, Settings, ModelManager], photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = job_parts[0]
    budget = PixelBudget(per_request=PHOTO_PIXELS, in_flight=PHOTO_PIXELS, max_wait_s=0)
    runner = _runner(job_parts, budget)
    held_during_model: list[int] = []
    real_run_kind = runner_module.run_kind

    def recording_run_kind(*args: Any, **kwargs: Any) -> Any:
        held_during_model.append(budget.used)
        return real_run_kind(*args, **kwargs)  # the real model call

    monkeypatch.setattr(runner_module, "run_kind", recording_run_kind)
    job, _ = queue.submit("alice", "analyze", {"task": "<CAPTION>"}, [JobInput("cat.png", _png(photo))])
    try:
        with budget.hold_blocking(1):  # another request holds part of the budget: the job does not fit
            runner(job.id)
        assert queue.get(job.id, "alice").status is JobStatus.QUEUED  # handed back, not failed
        assert held_during_model == []

        runner(job.id)
    finally:
        runner.close()
    finished = queue.get(job.id, "alice")
    assert finished.status is JobStatus.COMPLETE
    assert held_during_model == [PHOTO_PIXELS]
    assert budget.used == 0


def test_a_worker_thread_waits_for_pixels_an_async_request_gives_back() -> None:
    budget = PixelBudget(per_request=100, in_flight=100)
    got_in = threading.Event()

    async def scenario() -> None:
        async with budget.hold(100):
            worker = threading.Thread(target=lambda: _hold_then_set(budget, got_in))
            worker.start()
            while budget.waiting == 0:
                await asyncio.sleep(0.01)
            assert not got_in.is_set()
        await asyncio.to_thread(worker.join)

    asyncio.run(scenario())
    assert got_in.is_set() and budget.used == 0


def _hold_then_set(budget: PixelBudget, event: threading.Event) -> None:
    with budget.hold_blocking(60):
        event.set()
