"""The chat's conversation logic (`app.chat.flow`) with the tiny checkpoint and a recording UI."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.chat.catalogue import get_chat_task
from app.chat.flow import ChatFlow
from app.chat.inputs import Upload
from app.chat.session import ChatSession, SessionImage
from app.core.config import Settings
from app.core.errors import AppError
from app.core.images import ImageLimits, LoadedImage, load_image_bytes
from app.core.results import DetectionResult
from app.models.manager import ModelManager
from app.services.container import Services
from tests.chat_support import (
    BUSY_NOTICE,
    STEP_TITLE,
    RecordingUI,
    assert_loaded_behind_progress,
    decode_picture,
    download_json,
    make_services,
    run,
    save_upload,
    send,
    send_together,
    services_over,
)
from tests.scripted_support import BOX_A, BOX_B, scripted_model


@pytest.fixture
def services(tiny_settings: Settings, tiny_manager: ModelManager) -> Services:
    return make_services(tiny_settings, tiny_manager)


def expected_result(services: Services, photo: Image.Image, task: str, **inputs: object) -> dict[str, object]:
    """What the engine returns for the same input, called directly (greedy decoding is deterministic)."""
    loaded = LoadedImage(image=photo.convert("RGB"), source_format="PNG", name="cat.png")
    (outcome,) = services.analysis.analyze([loaded], task, **inputs)  # type: ignore[arg-type]
    assert outcome.result is not None
    return {"image": "cat.png", "model": services.settings.model_id, **outcome.result.to_dict()}


# -- one test per kind of task -------------------------------------------------------------------------------
def test_image_only_task_replies_with_picture_summary_and_downloads(
    services: Services, photo: Image.Image, cat_upload: Upload, monkeypatch: pytest.MonkeyPatch, tiny_tokenizer: Any
) -> None:
    session = ChatSession(identity="t")
    # Scripted boxes: the random tiny model's own answer may hold none, and the boxes are what is checked here.
    with scripted_model(monkeypatch, tiny_tokenizer, {"Locate the objects": ("car" + BOX_A, "dog" + BOX_B)}):
        ui = send(services, "", [cat_upload], "OD", session)
        expected = expected_result(services, photo, "<OD>")

    assert ui.notices == []
    (reply,) = ui.replies
    assert len(expected["detections"]) == 2  # type: ignore[arg-type]
    assert download_json(reply, "cat · objects.json") == expected
    assert reply.markdown.startswith("**cat\\.png** — Object detection\n\n")
    picture = decode_picture(reply)
    assert (picture.format, picture.size) == ("PNG", photo.size)
    names = [d.name for d in reply.downloads]
    assert names == (
        ["cat · objects.json", "cat · objects.coco.json"] if expected["detections"] else ["cat · objects.json"]
    )
    (step,) = ui.steps
    assert step.name == "Object detection" and step.title and STEP_TITLE.match(step.title)
    # The boxes are kept for "box N" on the next message.
    assert isinstance(session.detections[0], DetectionResult)
    assert session.detections[0].to_dict()["detections"] == expected["detections"]
    assert session.task == get_chat_task("OD")


def test_the_chosen_task_sticks_for_later_messages(services: Services, cat_upload: Upload) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "OCR"))
    run(flow.on_message(session, ui, "again please", [], None))  # no picker value: keep the last choice

    assert [r.downloads[0].name for r in ui.replies] == ["cat · text.json", "cat · text.json"]
    assert all("```text\n" in r.markdown or "*(no text)*" in r.markdown for r in ui.replies)


def test_caption_reply_shows_the_text_and_a_thumbnail(
    services: Services, photo: Image.Image, cat_upload: Upload
) -> None:
    ui = send(services, "", [cat_upload], "<CAPTION>")

    (reply,) = ui.replies
    expected = expected_result(services, photo, "<CAPTION>")
    assert download_json(reply, "cat · caption.json") == expected
    assert [d.name for d in reply.downloads] == ["cat · caption.json"]  # no COCO for text
    # Nothing is drawn for a caption: a small thumbnail says which image it is about.
    assert decode_picture(reply).size == (320, 213)
    assert (reply.picture_size, reply.picture_name) == ("small", "cat.thumbnail.png")


def test_text_task_asks_for_words_then_uses_the_next_message(
    services: Services, photo: Image.Image, cat_upload: Upload
) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "   ", [cat_upload], "OPEN_VOCABULARY_DETECTION"))
    assert ui.replies == [] and len(ui.notices) == 1
    assert ui.notices[0].startswith("**Open-vocabulary detection** needs words")

    run(flow.on_message(session, ui, "a cat", [], "OPEN_VOCABULARY_DETECTION"))
    (reply,) = ui.replies
    expected = expected_result(services, photo, "<OPEN_VOCABULARY_DETECTION>", text="a cat")
    assert download_json(reply, "cat · found.json") == expected


# -- regions ---------------------------------------------------------------------------------------------
def test_region_task_with_typed_coordinates(services: Services, photo: Image.Image, cat_upload: Upload) -> None:
    ui = RecordingUI()
    run(
        ChatFlow(services).on_message(
            ChatSession(identity="t"), ui, "40, 30, 400, 290", [cat_upload], "<REGION_TO_DESCRIPTION>"
        )
    )

    (reply,) = ui.replies
    body = download_json(reply, "cat · region description.json")
    assert body["region"] == [40, 30, 400, 290]
    assert body == expected_result(services, photo, "<REGION_TO_DESCRIPTION>", region=(40, 30, 400, 290))
    assert "Region (40, 30, 400, 290)" in reply.markdown
    # The annotated picture shows the region: its dashed frame is drawn in black and white at x=40.
    picture = decode_picture(reply).convert("RGB")
    frame_colors = {picture.getpixel((41, y)) for y in range(40, 280)}
    assert (0, 0, 0) in frame_colors and (255, 255, 255) in frame_colors


def test_region_task_without_a_region_shows_the_picker(
    services: Services, photo: Image.Image, cat_upload: Upload
) -> None:
    session = ChatSession(identity="t")
    ui = send(services, "", [cat_upload], "REGION_TO_CATEGORY", session)

    assert ui.replies == []
    ((text, pickers),) = ui.region_asks
    assert text.startswith("**Region to category** needs a region: drag a box")
    (picker,) = pickers
    props = picker.props()
    assert {k: props[k] for k in ("width", "height", "imageIndex", "imageName", "task", "batch")} == {
        "width": 451, "height": 300, "imageIndex": 0, "imageName": "cat.png",
        "task": "<REGION_TO_CATEGORY>", "batch": session.upload_batch,
    }  # fmt: skip
    src = str(props["src"])
    assert src.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size == photo.size


def test_box_reference_uses_the_box_from_the_last_detection(services: Services, cat_upload: Upload) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "OD"))
    # The tiny model's boxes are random; a known detection reply makes "box 2" checkable.
    session.remember_detections(
        {0: DetectionResult.from_boxes("<OD>", (451, 300), [(1, 2, 50, 60), (100, 80, 300, 250)], ["cat", "ear"])}
    )

    run(flow.on_message(session, ui, "what is in box 2?", [], "REGION_TO_DESCRIPTION"))
    body = download_json(ui.replies[-1], "cat · region description.json")
    assert body["region"] == [100, 80, 300, 250]

    run(flow.on_message(session, ui, "box 3", [], None))
    assert "there is no box 3" in ui.replies[-1].markdown
    assert ui.replies[-1].downloads == []


def test_box_reference_without_a_detection_explains_what_to_do(services: Services, cat_upload: Upload) -> None:
    ui = send(services, "box 2", [cat_upload], "REGION_TO_OCR")
    assert ui.replies == []
    assert ui.notices == [
        "**Cannot run that.** There is no earlier detection reply to take box 2 from. Run Object detection first, "
        "or type the region as x1,y1,x2,y2."
    ]


def test_region_picker_callback_runs_the_task_on_that_image(
    services: Services, photo: Image.Image, cat_upload: Upload
) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "REGION_TO_SEGMENTATION"))
    payload = {
        "task": "<REGION_TO_SEGMENTATION>",
        "batch": session.upload_batch,
        "image_index": 0,
        "xyxy": [10, 20, 200, 150],
    }

    run(flow.on_region_picked(session, ui, payload))
    (reply,) = ui.replies
    body = download_json(reply, "cat · region segmentation.json")
    assert body == expected_result(services, photo, "<REGION_TO_SEGMENTATION>", region=(10, 20, 200, 150))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch": -1}, "That picker belongs to images you replaced since"),
        ({"image_index": 3}, "The picked box refers to an image that is no longer in this chat."),
        ({"xyxy": ["1", 2, 3, 4]}, "The picked box needs four finite numbers."),
        ({"xyxy": [1, 2, 3]}, "The picked box needs four numbers x1,y1,x2,y2."),
        ({"task": "<OD>"}, "Object detection does not take a region."),
        ({"xyxy": [900, 900, 950, 950]}, "does not overlap the 451x300 image"),
    ],
)
def test_region_picker_callback_refuses_bad_payloads(
    services: Services, cat_upload: Upload, change: dict[str, object], message: str
) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "REGION_TO_CATEGORY"))
    payload = {"task": "<REGION_TO_CATEGORY>", "batch": session.upload_batch, "image_index": 0, "xyxy": [1, 2, 30, 40]}

    run(flow.on_region_picked(session, ui, {**payload, **change}))
    if ui.replies:  # a region outside the image fails per image, inside the reply
        assert message in ui.replies[0].markdown
    else:
        assert len(ui.notices) == 1 and message in ui.notices[0]


# -- analyze everything -------------------------------------------------------------------------------------
def test_analyze_everything_answers_in_one_reply_per_image(
    services: Services, photo: Image.Image, cat_upload: Upload
) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "CAPTION"))
    run(flow.on_analyze_everything(session, ui))

    reply = ui.replies[-1]
    body = download_json(reply, "cat · everything.json")
    assert list(body["results"]) == ["<CAPTION>", "<OD>", "<OCR>"]
    for task in ("<CAPTION>", "<OD>", "<OCR>"):
        expected = expected_result(services, photo, task)
        assert body["results"][task] == {k: v for k, v in expected.items() if k not in ("image", "model")}
    assert "**Caption:**" in reply.markdown and "**Objects:**" in reply.markdown and "**Text:**" in reply.markdown
    assert [s.name for s in ui.steps[-3:]] == ["Caption", "Object detection", "OCR"]
    assert decode_picture(reply).size == photo.size


def test_analyze_everything_without_images_asks_for_one(services: Services) -> None:
    ui = RecordingUI()
    run(ChatFlow(services).on_analyze_everything(ChatSession(identity="t"), ui))
    assert ui.notices == ["Add an image first: drag it into the chat or use the paperclip, then send."]


# -- limits, busy, queue ------------------------------------------------------------------------------------
def test_rate_limit_refuses_model_work_and_says_when_to_retry(
    tiny_settings: Settings, tiny_manager: ModelManager, cat_upload: Upload
) -> None:
    services = make_services(tiny_settings, tiny_manager, rate_limit="2/minute")
    ui, session = RecordingUI(), ChatSession(identity="limited-user")
    flow = ChatFlow(services)
    for _ in range(3):
        run(flow.on_message(session, ui, "", [cat_upload], "CAPTION"))

    assert len(ui.replies) == 2
    (notice,) = ui.notices
    assert re.fullmatch(
        r"\*\*Too many requests\.\*\* Rate limit of 2 per minute reached\. Try again in \d+ s\.", notice
    )
    # Another session has its own budget.
    other = RecordingUI()
    run(flow.on_message(ChatSession(identity="someone-else"), other, "", [cat_upload], "CAPTION"))
    assert len(other.replies) == 1


def test_analyze_everything_costs_one_unit_per_task_and_image(
    tiny_settings: Settings, tiny_manager: ModelManager, photo: Image.Image, cat_upload: Upload, tmp_path: Path
) -> None:
    """Caption, OD and OCR on two images are six model runs: six units of the limit, not one per message."""
    second = save_upload(photo.resize((320, 213)), tmp_path, "small.png")
    images = [SessionImage(cat_upload, (451, 300)), SessionImage(second, (320, 213))]

    # 5 per minute can never cover six runs: refused at once (before any model work), and not "retry later".
    ui, session = RecordingUI(), ChatSession(identity="everything-5")
    session.images = list(images)
    run(ChatFlow(make_services(tiny_settings, tiny_manager, rate_limit="5/minute")).on_analyze_everything(session, ui))
    assert ui.replies == [] and ui.steps == []
    (notice,) = ui.notices
    assert notice.startswith("**Too much at once.** This request needs 6 units of the rate limit (5/minute)")

    # 6 per minute covers it exactly, and nothing is left for one more caption on one image.
    ui, session = RecordingUI(), ChatSession(identity="everything-6")
    session.images = list(images)
    flow = ChatFlow(make_services(tiny_settings, tiny_manager, rate_limit="6/minute"))
    run(flow.on_analyze_everything(session, ui))
    assert [reply.image_name for reply in ui.replies] == ["cat.png", "small.png"] and ui.notices == []
    session.images = images[:1]
    run(flow.on_message(session, ui, "", [], "CAPTION"))
    assert len(ui.replies) == 2
    (notice,) = ui.notices
    assert notice.startswith("**Too many requests.** Rate limit of 6 per minute reached.")


def test_a_task_on_several_images_costs_one_unit_per_image(
    tiny_settings: Settings, tiny_manager: ModelManager, photo: Image.Image, cat_upload: Upload, tmp_path: Path
) -> None:
    second = save_upload(photo.resize((320, 213)), tmp_path, "small.png")
    services = make_services(tiny_settings, tiny_manager, rate_limit="3/minute")
    ui, session, flow = RecordingUI(), ChatSession(identity="two-images"), ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload, second], "CAPTION"))  # 2 units
    assert len(ui.replies) == 2
    run(flow.on_message(session, ui, "", [], "OD"))  # 2 more: over the 3 per minute
    assert len(ui.replies) == 2
    (notice,) = ui.notices
    assert notice.startswith("**Too many requests.** Rate limit of 3 per minute reached.")


def test_second_request_while_busy_is_told_to_wait(services: Services, cat_upload: Upload) -> None:
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    send_together(flow, session, ui, ("", [cat_upload], "CAPTION"), ("", [cat_upload], "OD"))
    assert len(ui.replies) == 1 and ui.replies[0].downloads[0].name == "cat · caption.json"
    assert ui.notices == [BUSY_NOTICE]
    assert not session.busy  # released afterwards: the session keeps working
    run(flow.on_message(session, ui, "", [], "OD"))
    assert ui.replies[-1].downloads[0].name == "cat · objects.json"


def test_full_model_queue_gives_a_clear_busy_message(
    services: Services, tiny_manager: ModelManager, cat_upload: Upload
) -> None:
    # Hold every place in the model's queue, as a crowd of waiting requests would.
    batcher = tiny_manager._batcher(tiny_manager.get())
    batcher.admit(tiny_manager.settings.max_queue_size)
    try:
        ui = send(services, "", [cat_upload], "CAPTION")
    finally:
        batcher.release(tiny_manager.settings.max_queue_size)
    assert ui.replies == []
    assert ui.notices == ["**Busy.** The model is busy with other requests; try again in a few seconds."]
    assert ui.steps[0].failed


# -- uploads -------------------------------------------------------------------------------------------------
def test_bad_upload_gets_a_message_and_the_session_keeps_working(
    services: Services, tmp_path: Path, cat_upload: Upload
) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "CAPTION"))
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"this is text, not a PNG")

    run(flow.on_message(session, ui, "", [Upload("notes.png", fake)], "CAPTION"))
    with pytest.raises(AppError) as decoding:  # the chat shows the intake's own message for this file
        load_image_bytes(fake.read_bytes(), ImageLimits(10**7, 10**7), name="notes.png")
    assert ui.notices == [f"**File refused.** {decoding.value.message}"]
    assert [loaded.name for loaded in session.images] == ["cat.png"]  # the earlier image stays
    assert len(ui.replies) == 1

    run(flow.on_message(session, ui, "", [Upload("notes.png", fake), cat_upload], "OD"))
    assert len(ui.notices) == 2 and ui.replies[-1].downloads[0].name == "cat · objects.json"


def test_session_keeps_files_not_pixels_and_decodes_them_per_request(
    services: Services, tmp_path: Path, photo: Image.Image
) -> None:
    upload = save_upload(photo, tmp_path, "cat.png")
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "", [upload], "CAPTION"))
    assert session.images == [SessionImage(upload, (451, 300))]

    run(flow.on_message(session, ui, "again", [], None))  # decoded again from the stored file
    assert len(ui.replies) == 2 and decode_picture(ui.replies[1]).size == (320, 213)

    upload.path.unlink()  # type: ignore[union-attr]
    run(flow.on_message(session, ui, "once more", [], None))
    assert ui.notices == ["**File refused.** cat.png: the uploaded file could not be read; upload it again."]


def test_upload_limits_come_from_settings(
    tiny_settings: Settings, tiny_manager: ModelManager, photo: Image.Image, tmp_path: Path
) -> None:
    settings = tiny_settings.model_copy(update={"max_images_per_request": 2, "max_image_bytes": 50_000})
    flow = ChatFlow(make_services(settings, tiny_manager))
    small = save_upload(photo.resize((40, 30)), tmp_path, "small.png")
    big = save_upload(photo, tmp_path, "big.png")  # ~260 KB as PNG

    ui = RecordingUI()
    run(flow.on_message(ChatSession(identity="t"), ui, "", [small, small, small], "CAPTION"))
    assert ui.notices == ["**Cannot run that.** You sent 3 files; at most 2 images fit in one message."]

    ui = RecordingUI()
    run(flow.on_message(ChatSession(identity="t"), ui, "", [big, small], "CAPTION"))
    size = big.path.stat().st_size  # type: ignore[union-attr]
    assert ui.notices == [f"**File refused.** big.png: {size:,} bytes is over the 50,000-byte limit per image."]
    assert [r.image_name for r in ui.replies] == ["small.png"]


def test_message_without_any_image_asks_for_one(services: Services) -> None:
    ui = send(services, "hello", [], None)
    assert ui.notices == ["Add an image first: drag it into the chat or use the paperclip, then send."]


# -- model state -----------------------------------------------------------------------------------------------
def test_first_request_shows_loading_progress(tiny_settings: Settings, cat_upload: Upload) -> None:
    with services_over(tiny_settings, ModelManager(tiny_settings)) as services:
        ui = send(services, "", [cat_upload], "CAPTION")
    assert_loaded_behind_progress(ui, tiny_settings.model_id)


def test_model_that_cannot_load_says_why_and_how_to_fix(
    tiny_settings: Settings, cat_upload: Upload, tmp_path: Path
) -> None:
    settings = tiny_settings.model_copy(update={"model_id": str(tmp_path / "no-such-model")})
    with services_over(settings, ModelManager(settings)) as services:
        ui = send(services, "", [cat_upload], "OD")
    assert ui.replies == [] and ui.progresses[0].failed
    (notice,) = ui.notices
    assert notice.startswith("**The model is not available.**\n\nModel directory ")
    assert "does not exist" in notice and "To fix it" in notice


def test_unexpected_failure_shows_a_reference_not_details(
    services: Services, cat_upload: Upload, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("/secret/internal/path exploded")

    monkeypatch.setattr(services.analysis, "analyze_async", explode)
    ui = send(services, "", [cat_upload], "CAPTION")
    (notice,) = ui.notices
    assert re.fullmatch(r"Something went wrong on our side \(reference `[0-9a-f]{8}`\)\. .*", notice)
    assert "secret" not in notice and "Traceback" not in notice
