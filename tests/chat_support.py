"""Helpers for the chat tests: a ChatUI that records what the chat shows, and services around a manager."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from app.chat.flow import ChatFlow
from app.chat.inputs import Upload
from app.chat.replies import escape_md, model_in_words
from app.chat.session import ChatSession
from app.chat.ui import ImageReply, RegionPicker
from app.core.config import Settings
from app.models.manager import ModelManager
from app.services.container import Services
from app.services.ratelimit import RateLimiter

BUSY_NOTICE = "**Busy.** I'm still working on your previous request. Wait for its answer, then send this again."
STEP_TITLE = re.compile(r"^(?P<task>.+) in \d+\.\d+ s$")  # a finished step: "Object detection in 0.42 s"


@dataclass
class RecordedStep:
    name: str
    title: str | None = None
    detail: str | None = None
    failed: bool = False

    def finish(self, title: str, detail: str) -> None:
        self.title, self.detail = title, detail

    def fail(self, title: str, detail: str) -> None:
        self.title, self.detail, self.failed = title, detail, True


@dataclass
class RecordedProgress:
    texts: list[str]
    failed_text: str
    failed: bool = False

    async def show(self, markdown: str) -> None:
        self.texts.append(markdown)


@dataclass
class RecordingUI:
    """Implements `app.chat.flow.ChatUI` by remembering everything, in order."""

    notices: list[str] = field(default_factory=list)
    replies: list[ImageReply] = field(default_factory=list)
    region_asks: list[tuple[str, list[RegionPicker]]] = field(default_factory=list)
    steps: list[RecordedStep] = field(default_factory=list)
    progresses: list[RecordedProgress] = field(default_factory=list)

    async def notify(self, markdown: str) -> None:
        self.notices.append(markdown)

    async def show_replies(self, replies: Sequence[ImageReply]) -> None:
        self.replies.extend(replies)

    async def ask_region(self, markdown: str, pickers: Sequence[RegionPicker]) -> None:
        self.region_asks.append((markdown, list(pickers)))

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[RecordedStep]:
        step = RecordedStep(name)
        self.steps.append(step)
        try:
            yield step
        except Exception:
            step.failed = True
            raise

    @asynccontextmanager
    async def progress(self, markdown: str, failed: str) -> AsyncIterator[RecordedProgress]:
        progress = RecordedProgress([markdown], failed)
        self.progresses.append(progress)
        try:
            yield progress
        except Exception:
            progress.failed = True
            raise


def make_services(settings: Settings, manager: ModelManager, rate_limit: str | None = None) -> Services:
    """The app's services around a test's manager, optionally with their own `rate_limit`."""
    limiter = RateLimiter(rate_limit) if rate_limit is not None else None
    return Services.from_manager(settings, manager, limiter=limiter)


@contextmanager
def services_over(settings: Settings, manager: ModelManager) -> Iterator[Services]:
    """`make_services` around a test's own manager (one not loaded yet, or broken), shut down afterwards."""
    try:
        yield make_services(settings, manager)
    finally:
        manager.shutdown()


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def send(
    services: Services, text: str, uploads: Sequence[Upload], task: str | None, session: ChatSession | None = None
) -> RecordingUI:
    """One chat message through a new `ChatFlow` (from a new session unless given); what the chat showed."""
    ui = RecordingUI()
    run(ChatFlow(services).on_message(session or ChatSession(identity="t"), ui, text, uploads, task))
    return ui


def send_together(
    flow: ChatFlow, session: ChatSession, ui: RecordingUI, *messages: tuple[str, Sequence[Upload], str]
) -> None:
    """Several `(text, uploads, task)` messages of one session at the same time, as a double send does."""

    async def together() -> None:
        await asyncio.gather(*(flow.on_message(session, ui, text, uploads, task) for text, uploads, task in messages))

    run(together())


def assert_loaded_behind_progress(ui: RecordingUI, model_id: str) -> None:
    """The first request loaded `model_id`, said so in a progress message, then replied."""
    (progress,) = ui.progresses
    words = escape_md(model_in_words(model_id))  # the model in words, never its path
    assert progress.texts[0] == f"Loading **{words}** (first request only)…"
    assert re.fullmatch(rf"\*\*{re.escape(words)}\*\* loaded in \d+\.\d+ s on cpu \(float32\)\.", progress.texts[-1])
    assert "/" not in progress.texts[-1]
    assert len(ui.replies) == 1


def save_upload(image: Image.Image, directory: Path, name: str) -> Upload:
    path = directory / name
    image.save(path)
    return Upload(name=name, path=path)


def download_json(reply: ImageReply, name: str) -> Any:
    found = [d for d in reply.downloads if d.name == name]
    assert found, f"no download {name!r} in {[d.name for d in reply.downloads]}"
    return json.loads(found[0].content)


def decode_picture(reply: ImageReply) -> Image.Image:
    assert reply.picture is not None
    image = Image.open(io.BytesIO(reply.picture.content))
    image.load()
    return image
