"""`chainlit_app.py` under a Chainlit context: what it sends to the browser (task picker, steps, elements)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.chat.inputs import Upload
from app.core.config import Settings
from app.core.tasks import FLORENCE_TASKS
from app.models.manager import ModelManager
from app.models.registry import build_manager
from app.services.container import set_services
from tests.chat_support import make_services

os.environ.setdefault("CHAINLIT_APP_ROOT", str(Path(__file__).resolve().parents[2]))

import chainlit as cl
from chainlit.context import init_http_context
from chainlit.emitter import BaseChainlitEmitter

import chainlit_app


class RecordingEmitter(BaseChainlitEmitter):
    """Keeps what Chainlit would send over the websocket."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self.steps: list[dict[str, Any]] = []
        self.elements: list[dict[str, Any]] = []
        self.events: list[tuple[str, Any]] = []
        self.modes: list[Any] = []

    async def send_step(self, step_dict: Any) -> None:
        self.steps.append(dict(step_dict))

    async def update_step(self, step_dict: Any) -> None:
        self.steps.append(dict(step_dict))

    async def send_element(self, element_dict: Any) -> None:
        self.elements.append(dict(element_dict))

    async def emit(self, event: str, data: Any) -> None:
        self.events.append((event, data))

    async def set_modes(self, modes: Any) -> None:
        self.modes = list(modes)

    def last(self, step_id: str) -> dict[str, Any]:
        return [s for s in self.steps if s["id"] == step_id][-1]

    def tool_step(self) -> dict[str, Any]:
        """The last state of the one tool step (the task's progress)."""
        (tool_id,) = {s["id"] for s in self.steps if s["type"] == "tool"}
        return self.last(tool_id)

    def last_reply(self) -> dict[str, Any]:
        return [s for s in self.steps if s["type"] == "assistant_message"][-1]


async def send_picture(path: Path, task: str, text: str = "") -> None:
    """A new chat, then `path` sent with `task` picked, as the browser sends them."""
    await chainlit_app.on_chat_start()
    message = cl.Message(content=text, elements=[cl.Image(path=str(path), name=path.name)])
    message.modes = {"task": task}
    await chainlit_app.on_message(message)


@pytest.fixture
def chat(tiny_settings: Settings, tiny_manager: ModelManager) -> Iterator[None]:
    set_services(make_services(tiny_settings, tiny_manager))
    yield
    set_services(None)


def in_context(coro_fn: Any) -> RecordingEmitter:
    """Run `coro_fn(emitter)` inside a fresh Chainlit HTTP context; return what was sent."""

    async def main() -> RecordingEmitter:
        context = init_http_context()
        emitter = RecordingEmitter(context.session)
        context.emitter = emitter
        try:
            await coro_fn(emitter)
        finally:
            await context.session.delete()  # its uploaded/persisted files
        return emitter

    return asyncio.run(main())


def test_chat_start_offers_the_task_picker_and_a_welcome(chat: None) -> None:
    emitter = in_context(lambda _: chainlit_app.on_chat_start())
    (mode,) = emitter.modes
    assert (mode.id, mode.name) == ("task", "Task")
    assert [(o.id, o.name, o.description.split(" Uses")[0].split(" Needs")[0]) for o in mode.options] == [
        ("AUTO", "Auto", 'Picks the task from your message: "find the cars", "read the text", "what is in box 2", '
         '"is it a cat or a dog?". An empty message gives a caption.'),
        *((spec.short_name, spec.name, spec.description) for spec in FLORENCE_TASKS),
        ("CLASSIFY", "Classify", "The most likely ImageNet classes, with a chart."),
        ("ZERO_SHOT", "Zero-shot", "Scores for labels you type, comma-separated (category: label groups them), "
         "with a chart."),
    ]  # fmt: skip
    hints = {o.id: o.description for o in mode.options}
    assert hints["OD"].endswith("objects.") and hints["CLASSIFY"].endswith("chart.")
    assert hints["ZERO_SHOT"].endswith(" Uses your message.") and hints["REGION_TO_OCR"].endswith(" Needs a box.")
    assert [o.id for o in mode.options if o.default] == ["AUTO"]
    (welcome,) = [s for s in emitter.steps if s["type"] == "assistant_message"]
    starters = [data for event, data in emitter.events if event == "action"]
    assert [(a["name"], a["label"], a["forId"]) for a in starters] == [
        ("starter", "Find the cars", welcome["id"]),
        ("starter", "Read a sign", welcome["id"]),
        ("starter", "Describe a picture", welcome["id"]),
    ]
    assert welcome["output"].startswith("**tiny\\-florence")  # the tiny checkpoint's folder name, not its path


def test_message_renders_step_picture_downloads_and_action(chat: None, cat_upload: Upload) -> None:
    emitter = in_context(lambda _: send_picture(cat_upload.path, "OD"))
    tool = emitter.tool_step()
    assert tool["name"].startswith("Object detection in ") and tool["output"].startswith("1 image in ")
    reply = emitter.last_reply()
    assert reply["output"].startswith("**cat\\.png** — Object detection\n\n")
    sent = [e for e in emitter.elements if e["forId"] == reply["id"]]
    kinds = [(e["type"], e["name"], e["mime"], e["display"]) for e in sent]
    # Chainlit sends a message's elements concurrently: compare without order.
    assert ("image", "cat.annotated.png", "image/png", "inline") in kinds
    assert ("file", "cat · objects.json", "application/json", "inline") in kinds
    assert {kind for kind, *_ in kinds} == {"image", "file"}
    actions = [data for event, data in emitter.events if event == "action" and data["name"] != "starter"]
    assert [(a["name"], a["label"], a["payload"]) for a in actions] == [
        ("follow_up", "Text", {"task": "OCR_WITH_REGION"}),
        ("follow_up", "Ask about a box", {"task": "REGION_TO_DESCRIPTION"}),
        ("follow_up", "Detailed caption", {"task": "DETAILED_CAPTION"}),
        ("follow_up", "Segment…", {"task": "REFERRING_EXPRESSION_SEGMENTATION"}),
        ("follow_up", "Caption", {"task": "CAPTION"}),
        ("analyze_everything", "Analyze everything", {}),
    ]
    assert {a["forId"] for a in actions} == {reply["id"]}


def test_region_picker_element_and_its_callback(chat: None, cat_upload: Upload) -> None:
    async def converse(emitter: RecordingEmitter) -> None:
        await send_picture(cat_upload.path, "REGION_TO_CATEGORY")
        (picker,) = [e for e in emitter.elements if e["type"] == "custom"]
        props = json.loads(picker["props"]) if isinstance(picker.get("props"), str) else picker["props"]
        payload = {
            "task": props["task"],
            "batch": props["batch"],
            "image_index": props["imageIndex"],
            "xyxy": [10, 10, 120, 90],
        }
        await chainlit_app.on_region_picked(cl.Action(name="region_picked", payload=payload))

    emitter = in_context(converse)
    (picker,) = [e for e in emitter.elements if e["type"] == "custom"]
    assert picker["name"] == "RegionPicker" and picker["display"] == "inline"
    reply = emitter.last_reply()
    assert reply["output"].startswith("**cat\\.png** — Region to category\n\nRegion (10, 10, 120, 90)")
    files = [e for e in emitter.elements if e["forId"] == reply["id"] and e["type"] == "file"]
    assert [f["name"] for f in files] == ["cat · region category.json"]


@pytest.fixture
def classify_chat(classify_settings: Settings) -> Iterator[None]:
    manager = build_manager(classify_settings)
    set_services(make_services(classify_settings, manager))
    yield
    set_services(None)
    manager.shutdown()


def test_zero_shot_reply_sends_the_chart_next_to_the_table(classify_chat: None, cat_upload: Upload) -> None:
    emitter = in_context(lambda _: send_picture(cat_upload.path, "ZERO_SHOT", "a cat, a dog"))
    assert emitter.tool_step()["name"].startswith("Zero-shot in ")
    reply = emitter.last_reply()
    assert reply["output"].startswith("**cat\\.png** — Zero\\-shot of *a cat, a dog*\n\nProbabilities over your labels")
    assert "| Label | Probability |" in reply["output"]
    sent = {
        (e["type"], e["name"], e["mime"], e["display"], e.get("size"))
        for e in emitter.elements
        if e["forId"] == reply["id"]
    }
    assert sent == {
        ("image", "cat.chart.png", "image/png", "inline", "large"),
        ("file", "cat · zero-shot.json", "application/json", "inline", None),
    }
