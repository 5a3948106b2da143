"""Helpers for the chat tests: a ChatUI that records what the chat shows, and services around a manager."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from app.chat.inputs import Upload
from app.chat.ui import ImageReply, RegionPicker
from app.config import Settings
from app.models.manager import ModelManager
from app.services.analysis import AnalysisService
from app.services.container import Services
from app.services.ratelimit import RateLimiter


@dataclass
class RecordedStep:
    name: str
    title: str | None = None
    detail: str | None = None
    failed: bool = False

    def finish(self, title: str, detail: str) -> None:
        self.title, self.detail = title, detail


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
    return Services(
        settings=settings,
        manager=manager,
        analysis=AnalysisService(manager),
        limiter=RateLimiter(rate_limit if rate_limit is not None else settings.rate_limit),
    )


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
