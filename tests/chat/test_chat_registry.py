"""The chat follows the task registry and the results' run info: a task registered at run time is in the picker
and answers through the one flow, and downloads name the model that answered (rapidocr for OCR when configured).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from app.chat import followups
from app.chat.catalogue import chat_tasks, get_chat_task, picker_hint, picker_icon
from app.chat.flow import ChatFlow
from app.chat.inputs import Upload
from app.chat.session import ChatSession
from app.chat.ui import FollowUp
from app.core.config import Settings
from app.core.results import RunInfo
from app.core.tasks import InputKind, OutputKind, TaskSpec, register_task, unregister_task
from app.models.base import TaskRequest
from app.models.registry import BackendRegistry, build_manager
from tests.chat_support import RecordingUI, download_json, run, save_upload, send, services_over
from tests.stub_backend import StubBackend

os.environ.setdefault("CHAINLIT_APP_ROOT", str(Path(__file__).resolve().parents[2]))

import chainlit_app

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

FAKE = TaskSpec(
    "<FAKE_ECHO>", "FAKE_ECHO", "Fake echo", "Says what you typed and how big the image is.",
    InputKind.TEXT, OutputKind.TEXT, ("echo_fake",), backend="fake",
)  # fmt: skip


@dataclass(frozen=True)
class EchoResult:
    """A result type the chat has never heard of: only `summary`, `to_dict` and the run info every result has."""

    text: str
    image_wh: tuple[int, int]
    run: RunInfo | None = field(default=None, compare=False)

    def summary(self) -> str:
        return f"{self.text} on {self.image_wh[0]}x{self.image_wh[1]}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "echo", "echo": self.text, "image_wh": list(self.image_wh)}


class EchoBackend(StubBackend):
    name = "fake"
    tasks = frozenset({FAKE.token})
    model_id = "example/echo-1"
    library = "echo-0.1"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str | None, tuple[int, int]]] = []

    def run(self, requests: Sequence[TaskRequest]) -> list[EchoResult]:
        self.seen += [(request.text, request.image_wh) for request in requests]
        return [EchoResult(request.text or "", request.image_wh) for request in requests]


@pytest.fixture
def fake_task() -> Iterator[TaskSpec]:
    register_task(FAKE)
    yield FAKE
    unregister_task(FAKE.token)


def test_a_task_registered_after_import_is_in_the_picker(fake_task: TaskSpec) -> None:
    assert [t.key for t in chat_tasks()][-1] == "FAKE_ECHO"
    assert get_chat_task("echo-fake") is fake_task
    assert (picker_icon(fake_task), picker_hint(fake_task)) == ("text", " Uses your message.")
    (mode,) = chainlit_app.task_modes()
    option = next(o for o in mode.options if o.id == "FAKE_ECHO")
    assert (option.name, option.description, option.icon) == (
        "Fake echo", "Says what you typed and how big the image is. Uses your message.", "text"
    )  # fmt: skip


def test_a_registered_task_runs_in_the_chat_with_a_plain_reply(
    fake_task: TaskSpec, tiny_settings: Settings, cat_upload: Upload
) -> None:
    backend = EchoBackend()
    registry = BackendRegistry.from_settings(tiny_settings, extra=[backend])  # type: ignore[list-item]
    with services_over(tiny_settings, build_manager(tiny_settings, registry)) as services:
        ui, session = RecordingUI(), ChatSession(identity="t")
        run(ChatFlow(services).on_message(session, ui, "", [cat_upload], "FAKE_ECHO"))
        assert ui.notices == [
            "**Fake echo** needs words: Says what you typed and how big the image is. Type them and send "
            "(the image stays)."
        ]
        run(ChatFlow(services).on_message(session, ui, "hello *there*", [], None))

    assert backend.seen == [("hello *there*", (451, 300))]  # the message's words are the task's text input
    (reply,) = ui.replies
    assert reply.markdown == "**cat\\.png** — Fake echo of *hello \\*there\\**\n\nhello \\*there\\* on 451x300"
    assert reply.picture is not None and reply.picture_name == "cat.thumbnail.png"
    body = download_json(reply, "cat · fake echo.json")
    assert body == {"image": "cat.png", "model": "example/echo-1", "kind": "echo", "echo": "hello *there*",
                    "image_wh": [451, 300]}  # fmt: skip
    assert ui.steps[0].name == "Fake echo" and not ui.steps[0].failed


# -- which model answered: the result's run info, not the settings ------------------------------------------
@pytest.fixture
def sign_upload(tmp_path: Path) -> Upload:
    if not FONT.is_file():
        pytest.skip("needs fonts-dejavu-core (installed by .ci/run)")
    sign = Image.new("RGB", (420, 120), "white")
    ImageDraw.Draw(sign).text((20, 35), "OPEN 24 HOURS", fill="black", font=ImageFont.truetype(str(FONT), 36))
    return save_upload(sign, tmp_path, "sign.png")


def test_ocr_download_names_rapidocr_when_it_reads_the_text(tiny_settings: Settings, sign_upload: Upload) -> None:
    settings = tiny_settings.model_copy(update={"ocr_backend": "rapidocr"})
    with services_over(settings, build_manager(settings, BackendRegistry.from_settings(settings))) as services:
        ui = send(services, "", [sign_upload], "OCR")
        flow, session, everything = ChatFlow(services), ChatSession(identity="t"), RecordingUI()
        run(flow.on_message(session, RecordingUI(), "", [sign_upload], "CAPTION"))
        run(flow.on_analyze_everything(session, everything))

    (reply,) = ui.replies
    body = download_json(reply, "sign · text.json")
    assert body["model"] == "rapidocr" != settings.model_id
    assert body["text"] == "OPEN 24 HOURS"
    # "Analyze everything": the caption and objects come from Florence-2, the text from rapidocr.
    combined = download_json(everything.replies[-1], "sign · everything.json")
    assert combined["model"] == settings.model_id
    assert combined["models"] == {"<CAPTION>": settings.model_id, "<OD>": settings.model_id, "<OCR>": "rapidocr"}
    assert combined["results"]["<OCR>"]["text"] == "OPEN 24 HOURS"


def test_follow_up_buttons_name_registered_tasks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = FollowUp("NOT_REGISTERED", "Gone", "A task no longer in the registry")
    monkeypatch.setattr(followups, "FOLLOW_UPS", (gone, *followups.FOLLOW_UPS))
    offered = [f.task_key for f in followups.follow_ups_after("CAPTION")]
    assert offered == ["OD", "OCR_WITH_REGION", "REGION_TO_DESCRIPTION", "DETAILED_CAPTION",
                       "REFERRING_EXPRESSION_SEGMENTATION"]  # fmt: skip
