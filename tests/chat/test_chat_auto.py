"""Auto mode, follow-up buttons, box numbers and honest steps, through `ChatFlow` with the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.chat.flow import ChatFlow
from app.chat.inputs import Upload
from app.chat.session import ChatSession
from app.core.config import Settings
from app.core.results import DetectionResult, SegmentationResult
from app.models.manager import ModelManager
from app.services.container import Services
from tests.chat_support import RecordingUI, download_json, make_services, run, save_upload, send
from tests.scripted_support import BOX_A, BOX_B, scripted_model


@pytest.fixture
def services(tiny_settings: Settings, tiny_manager: ModelManager) -> Services:
    return make_services(tiny_settings, tiny_manager)


@pytest.mark.parametrize(
    ("message", "heading", "download"),
    [
        ("find the cars", "Open\\-vocabulary detection of *cars*", "found"),
        ("Detect the objects in this image", "Object detection", "objects"),
        ("read the text", "OCR", "text"),
        ("", "Caption", "caption"),
    ],
)
def test_auto_mode_runs_the_task_the_message_asks_for_and_says_so(
    services: Services, cat_upload: Upload, message: str, heading: str, download: str
) -> None:
    ui = send(services, message, [cat_upload], "AUTO")
    (reply,) = ui.replies
    assert reply.markdown.startswith(f"**cat\\.png** — {heading}\n\n")
    assert download_json(reply, f"cat · {download}.json")["image"] == "cat.png"
    assert ui.notices == []


def test_the_picker_overrides_what_the_message_says(services: Services, cat_upload: Upload) -> None:
    ui = send(services, "find the cars", [cat_upload], "CAPTION")
    (reply,) = ui.replies
    assert reply.markdown.startswith("**cat\\.png** — Caption\n\n")


def test_an_unrecognised_message_gets_a_caption_and_a_hint(services: Services, cat_upload: Upload) -> None:
    ui = send(services, "hello there", [cat_upload], "AUTO")
    (notice,) = ui.notices
    assert notice.startswith("I did not recognise a request in “hello there”, so here is a **Caption**.")
    assert ui.replies[0].markdown.startswith("**cat\\.png** — Caption\n\n")


def test_the_last_reply_offers_follow_ups_other_than_the_task_just_run(services: Services, cat_upload: Upload) -> None:
    ui = send(services, "", [cat_upload], "OD")
    (reply,) = ui.replies
    keys = [f.task_key for f in reply.follow_ups]
    assert "OD" not in keys and keys[:2] == ["OCR_WITH_REGION", "REGION_TO_DESCRIPTION"]


def test_a_follow_up_runs_on_the_same_images_without_typing(services: Services, cat_upload: Upload) -> None:
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "AUTO"))
    run(flow.on_follow_up(session, ui, "OCR_WITH_REGION"))
    assert ui.replies[-1].markdown.startswith("**cat\\.png** — OCR with regions\n\n")
    assert [s.name for s in ui.steps] == ["Caption", "OCR with regions"]

    # A follow-up that needs words asks for them; the next message is those words, whatever it says.
    run(flow.on_follow_up(session, ui, "REFERRING_EXPRESSION_SEGMENTATION"))
    assert ui.notices[-1].startswith("**Referring expression segmentation**: type what to look for")
    run(flow.on_message(session, ui, "read the dog", [], "AUTO"))
    assert ui.replies[-1].markdown.startswith("**cat\\.png** — Referring expression segmentation of *read the dog*")
    assert session.awaiting is None

    run(flow.on_follow_up(session, ui, "AUTO"))  # a forged payload: refused in words
    assert ui.notices[-1] == "**Cannot run that.** That button names no task; choose one in the Task picker."


def test_box_numbers_come_from_the_latest_reply_with_boxes(services: Services, cat_upload: Upload) -> None:
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "AUTO"))
    # The tiny model's boxes are random: known replies make the numbers checkable.
    session.remember_detections(
        {0: DetectionResult.from_boxes("<OD>", (451, 300), [(1, 2, 50, 60), (100, 80, 300, 250)], ["cat", "ear"])}
    )
    segments = SegmentationResult.from_polygons(
        "<REFERRING_EXPRESSION_SEGMENTATION>", (451, 300), [[[10, 10, 90, 10, 90, 70, 10, 70]]], ["dog"]
    )
    session.remember_detections({0: segments})
    run(flow.on_message(session, ui, "what is in box 1", [], "AUTO"))
    reply = ui.replies[-1]
    assert reply.markdown.startswith("**cat\\.png** — Region to description of box 1\n\nRegion (10, 10, 90, 70)")
    assert download_json(reply, "cat · region description.json")["region"] == [10, 10, 90, 70]


def test_a_run_without_any_result_is_a_failed_step(services: Services, cat_upload: Upload) -> None:
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "AUTO"))
    session.remember_detections({0: DetectionResult.from_boxes("<OD>", (451, 300), [(1, 2, 50, 60)], ["cat"])})
    run(flow.on_message(session, ui, "describe box 4", [], "AUTO"))
    step = ui.steps[-1]
    assert step.failed and step.title == "Region to description failed"
    assert "there is no box 4" in ui.replies[-1].markdown
    assert not ui.steps[0].failed


def test_a_two_image_message_gets_one_combined_coco_file_with_distinct_ids(
    services: Services, photo: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_tokenizer: Any
) -> None:
    uploads = [save_upload(photo, tmp_path, "street.png"), save_upload(photo.rotate(90), tmp_path, "yard.png")]
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    with scripted_model(monkeypatch, tiny_tokenizer, {"region proposals": (BOX_A + BOX_B, "")}):
        run(flow.on_message(session, ui, "", uploads, "REGION_PROPOSAL"))
    first, last = ui.replies
    assert first.downloads[0].name == "street · region proposals.json"
    names = [d.name for d in last.downloads]
    assert names[0] == "yard · region proposals.json"
    per_image = [download_json(r, f"{stem} · region proposals.json") for r, stem in ((first, "street"), (last, "yard"))]
    assert [len(body["detections"]) for body in per_image] == [2, 2]
    assert names[-1] == "2 images · region proposals.coco.json"
    dataset = download_json(last, "2 images · region proposals.coco.json")
    assert [(i["id"], i["file_name"]) for i in dataset["images"]] == [(1, "street.png"), (2, "yard.png")]
    assert len({a["id"] for a in dataset["annotations"]}) == len(dataset["annotations"])
    assert len(dataset["annotations"]) == sum(len(body["detections"]) for body in per_image)


def test_a_starter_message_runs_on_its_sample_image(services: Services) -> None:
    ui = send(services, "Read the text in the sample sign picture", [], "AUTO")
    (reply,) = ui.replies
    assert reply.markdown.startswith("**sign\\.png** — OCR\n\n")
    assert download_json(reply, "sign · text.json")["image_wh"] == [800, 450]
    # Any other message without an image still asks for one.
    assert send(services, "Read the text", [], "AUTO").notices == [
        "Add an image first: drag it into the chat or use the paperclip, then send."
    ]


def test_ask_about_a_box_offers_the_numbered_boxes_as_starting_points(services: Services, cat_upload: Upload) -> None:
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    run(flow.on_message(session, ui, "", [cat_upload], "AUTO"))
    session.remember_detections(
        {0: DetectionResult.from_boxes("<OD>", (451, 300), [(1, 2, 50, 60), (100, 80, 300, 250)], ["cat", "ear"])}
    )
    run(flow.on_follow_up(session, ui, "REGION_TO_DESCRIPTION"))
    markdown, (picker,) = ui.region_asks[-1]
    assert "such as `box 2`" in markdown
    assert picker.props()["boxes"] == [
        {"number": 1, "label": "cat", "xyxy": [1, 2, 50, 60]},
        {"number": 2, "label": "ear", "xyxy": [100, 80, 300, 250]},
    ]
