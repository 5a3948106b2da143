"""The Classify and Zero-shot chat tasks (`app.chat.flow`) on tiny ResNet / CLIP checkpoints.

Classify's expected numbers come from the tiny ResNet's known logits; zero-shot's from the service
called directly on the same image (the chat must show exactly what the engine computes).
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.chat.catalogue import chat_tasks, get_chat_task
from app.chat.flow import ChatFlow
from app.chat.inputs import Upload, labels_from_text
from app.chat.session import ChatSession
from app.chat.ui import ImageReply
from app.core.config import Settings
from app.core.errors import InvalidInput, UnknownTask
from app.core.images import LoadedImage
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.models.manager import ModelManager
from app.models.registry import build_manager
from app.services.container import Services
from tests.chat_support import (
    BUSY_NOTICE,
    STEP_TITLE,
    RecordingUI,
    assert_loaded_behind_progress,
    download_json,
    make_services,
    run,
    save_upload,
    send,
    send_together,
    services_over,
)
from tests.tiny_models import RESNET_BIAS_LOGITS

BAR_RGB = (59, 130, 246)  # app.rendering.charts draws bars in #3b82f6


@pytest.fixture(scope="module")
def manager(classify_settings: Settings) -> Iterator[ModelManager]:
    built = build_manager(classify_settings)  # Florence-2, classifier and zero-shot, each loaded on first use
    yield built
    built.shutdown()


@pytest.fixture
def services(classify_settings: Settings, manager: ModelManager) -> Services:
    return make_services(classify_settings, manager)


def imagenet_probability(index: int) -> float:
    total = sum(math.exp(v) for v in RESNET_BIAS_LOGITS.values()) + 1000 - len(RESNET_BIAS_LOGITS)
    return math.exp(RESNET_BIAS_LOGITS.get(index, 0.0)) / total


def chart_bar_widths(reply: ImageReply) -> list[int]:
    """Widths in pixels of the chart's bars, top to bottom (rows of pure bar colour, grouped)."""
    assert reply.picture is not None and reply.picture.mime == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(reply.picture.content)).convert("RGB"))
    mask = (pixels == BAR_RGB).all(axis=2)
    rows = np.flatnonzero(mask.any(axis=1))
    bars = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if rows.size else []
    return [int(mask[bar[len(bar) // 2]].sum()) for bar in bars]


def assert_bars_match(widths: list[int], probabilities: list[float]) -> None:
    """Bar lengths are proportional to the probabilities. Only pixels of the pure bar colour are counted, so an
    antialiased end can drop one pixel at each side of a bar, and of the longest bar the others are scaled by:
    hence the 3 px tolerance (a 3 px bar has measured as 1), and bars under 3 px may not show at all."""
    visible = [p for p in probabilities if p * widths[0] / probabilities[0] >= 3]
    assert len(visible) <= len(widths) <= len(probabilities)
    for width, probability in zip(widths, visible, strict=False):
        assert width == pytest.approx(widths[0] * probability / probabilities[0], abs=3)


# -- the task list -----------------------------------------------------------------------------------------
def test_chat_tasks_are_the_florence_catalogue_plus_the_classifiers() -> None:
    assert [t.key for t in chat_tasks()][-2:] == ["CLASSIFY", "ZERO_SHOT"]
    assert len({t.key for t in chat_tasks()}) == len(chat_tasks())
    assert get_chat_task("classify") is get_chat_task("CLASSIFY") is get_chat_task("imagenet")
    assert get_chat_task("zero-shot") is get_chat_task("ZERO_SHOT")
    assert get_chat_task("<OD>") is get_chat_task("od") is get_chat_task("detection")
    assert get_chat_task("clip") is get_chat_task("ZEROSHOT") is get_chat_task("ZERO_SHOT")
    with pytest.raises(UnknownTask, match=r"Valid tasks: AUTO, CAPTION, .*, CLASSIFY, ZERO_SHOT\."):
        get_chat_task("nope")


# -- Classify ------------------------------------------------------------------------------------------------
def test_classify_replies_with_table_chart_and_json(
    services: Services, classify_settings: Settings, cat_upload: Upload
) -> None:
    session = ChatSession(identity="t")
    ui = send(services, "", [cat_upload], "CLASSIFY", session)

    assert ui.notices == []
    (reply,) = ui.replies
    assert reply.markdown == (
        "**cat\\.png** — Classify\n\n"
        "| # | Name | Synset | Probability |\n"
        "|---|---|---|---|\n"
        "| 1 | tabby cat | `n02123045` | 26.4% |\n"
        "| 2 | tiger cat | `n02123159` | 5.9% |\n"
        "| 3 | tench | `n01440764` | 1.3% |\n"
        "| 4 | goldfish | `n01443537` | 1.3% |\n"
        "| 5 | great white shark | `n01484850` | 0.1% |"
    )
    body = download_json(reply, "cat · classes.json")
    assert (body["image"], body["kind"], body["model"], body["image_wh"]) == (
        "cat.png", "classification", classify_settings.classifier_model_id, [451, 300]
    )  # fmt: skip
    indices = [281, 282, 0, 1, 2]
    assert [p["class"] for p in body["predictions"]] == [
        "n02123045",
        "n02123159",
        "n01440764",
        "n01443537",
        "n01484850",
    ]
    assert [p["probability"] for p in body["predictions"]] == pytest.approx(
        [imagenet_probability(i) for i in indices], abs=1e-6
    )
    assert reply.picture_name == "cat.chart.png"
    assert_bars_match(chart_bar_widths(reply), [imagenet_probability(i) for i in indices])
    (step,) = ui.steps
    assert step.name == "Classify" and step.title and STEP_TITLE.match(step.title) and step.detail
    assert step.detail.startswith("1 image in ")
    assert session.task is get_chat_task("CLASSIFY")


def test_classify_sticks_and_answers_each_image_in_order(
    services: Services, photo: Image.Image, astronaut: Image.Image, tmp_path: Path
) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    uploads = [save_upload(photo, tmp_path, "cat.png"), save_upload(astronaut.resize((128, 128)), tmp_path, "a.png")]
    run(flow.on_message(session, ui, "", uploads, "CLASSIFY"))
    run(flow.on_message(session, ui, "again", [], None))  # no picker value: the last choice stays

    assert [r.image_name for r in ui.replies] == ["cat.png", "a.png", "cat.png", "a.png"]
    assert all("| 1 | tabby cat | `n02123045` | 26.4% |" in r.markdown for r in ui.replies)
    assert [s.detail.split(" in ")[0] for s in ui.steps if s.detail] == ["2 images", "2 images"]


# -- Zero-shot -----------------------------------------------------------------------------------------------
def test_zero_shot_asks_for_labels_then_scores_them(services: Services, photo: Image.Image, cat_upload: Upload) -> None:
    ui, session = RecordingUI(), ChatSession(identity="t")
    flow = ChatFlow(services)
    run(flow.on_message(session, ui, "  ", [cat_upload], "ZERO_SHOT"))
    assert ui.replies == [] and ui.steps == []
    assert ui.notices == [
        "**Zero-shot** needs labels: type them comma-separated, e.g. `a cat, a dog, a car`, and send (the image "
        "stays). Group labels with `category: label`, e.g. `pet: a cat, pet: a dog, vehicle: a car`."
    ]

    run(flow.on_message(session, ui, "a cat, a dog,\na red car", [], None))
    (reply,) = ui.replies
    loaded = LoadedImage(photo.convert("RGB"), "PNG", "cat.png")
    request = ZeroShotRequest.create(["a cat", "a dog", "a red car"])
    (direct,) = asyncio.run(services.analysis.analyze_async([loaded], "ZERO_SHOT", options=TaskInput(labels=request)))
    assert direct.result is not None
    expected = direct.result.by_label
    body = download_json(reply, "cat · zero-shot.json")
    assert list(body["result"]) == ["a cat", "a dog", "a red car"]
    assert list(body["result"].values()) == pytest.approx(list(expected.values()), abs=1e-6)
    assert sum(body["result"].values()) == pytest.approx(1.0, abs=1e-5)

    # The table shows the reply's own numbers (equal to the direct call's within 1e-6, checked above): a
    # value that close to a rounding edge would print differently from the direct call's.
    ranked = sorted(body["result"].items(), key=lambda item: -item[1])
    rows = "\n".join(f"| {label} | {p:.1%} |" for label, p in ranked)
    assert reply.markdown == (
        "**cat\\.png** — Zero\\-shot of *a cat, a dog, a red car*\n\n"
        "Probabilities over your labels (they add up to 100%).\n\n"
        f"| Label | Probability |\n|---|---|\n{rows}"
    )
    assert reply.picture_name == "cat.chart.png"
    assert_bars_match(chart_bar_widths(reply), [p for _, p in ranked])
    assert ui.steps[-1].name == "Zero-shot"


def test_zero_shot_categories_sum_their_labels(services: Services, cat_upload: Upload) -> None:
    ui = RecordingUI()
    text = "pet: a cat, pet: a dog, vehicle: a red car"
    run(ChatFlow(services).on_message(ChatSession(identity="t"), ui, text, [cat_upload], "ZERO_SHOT"))

    (reply,) = ui.replies
    body = download_json(reply, "cat · zero-shot.json")
    by_label = body["result"]
    assert body["categories"] == pytest.approx(
        {"pet": by_label["a cat"] + by_label["a dog"], "vehicle": by_label["a red car"]}, abs=2e-6
    )
    assert "| Category | Probability |" in reply.markdown
    assert f"| a red car | vehicle | {by_label['a red car']:.1%} |" in reply.markdown
    # The chart shows the categories, longest first; a bar a few pixels wide may lose its anti-aliased
    # edge to the colour match, or not show at all, so only the order and count are exact here.
    widths = chart_bar_widths(reply)
    shares = sorted(body["categories"].values(), reverse=True)
    assert len(widths) == 2 if shares[1] / shares[0] * widths[0] >= 8 else 1 <= len(widths) <= 2
    assert widths == sorted(widths, reverse=True)


def test_one_label_gets_an_independent_score(services: Services, cat_upload: Upload) -> None:
    ui = send(services, "a cat", [cat_upload], "ZERO_SHOT")
    (reply,) = ui.replies
    body = download_json(reply, "cat · zero-shot.json")
    assert body["multi_label"] is True and 0 < body["result"]["a cat"] < 1
    assert "Independent score per label." in reply.markdown


@pytest.mark.parametrize(
    ("text", "labels", "categories"),
    [
        ("cat, dog", ["cat", "dog"], None),
        ("  a  cat ,\n\na dog,, ", ["a cat", "a dog"], None),
        ("pet: cat, pet: dog, car", ["cat", "dog", "car"], {"cat": "pet", "dog": "pet"}),
        ("x: a: b", ["a: b"], {"a: b": "x"}),
    ],
)
def test_labels_from_text(text: str, labels: list[str], categories: dict[str, str] | None) -> None:
    assert labels_from_text(text) == (labels, categories)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pet:, dog", "`pet:` needs a label after the colon."),
        (": cat, dog", "`:cat` needs a category before the colon."),
        ("a: cat, b: cat", "The label 'cat' is in two categories."),
    ],
)
def test_bad_label_syntax_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        labels_from_text(text)


def test_bad_labels_cost_no_request_and_load_no_model(
    classify_settings: Settings, manager: ModelManager, cat_upload: Upload
) -> None:
    flow = ChatFlow(make_services(classify_settings, manager, rate_limit="1/minute"))
    ui, session = RecordingUI(), ChatSession(identity="labels-user")
    run(flow.on_message(session, ui, ", ,", [cat_upload], "ZERO_SHOT"))
    run(flow.on_message(session, ui, "x" * 201 + ", dog", [], None))
    assert ui.notices == [
        "**Cannot run that.** Give at least one label.",
        "**Cannot run that.** Labels are limited to 200 characters.",
    ]
    assert ui.steps == [] and ui.progresses == []
    run(flow.on_message(session, ui, "cat, dog", [], None))  # the one request this minute still works
    assert len(ui.replies) == 1


# -- shared guards: rate limit, busy session, full queue, uploads, loading ----------------------------------
def test_rate_limit_counts_every_task_kind(
    classify_settings: Settings, manager: ModelManager, cat_upload: Upload
) -> None:
    flow = ChatFlow(make_services(classify_settings, manager, rate_limit="2/minute"))
    ui, session = RecordingUI(), ChatSession(identity="classify-limited")
    run(flow.on_message(session, ui, "", [cat_upload], "CLASSIFY"))
    run(flow.on_message(session, ui, "cat, dog", [], "ZERO_SHOT"))
    run(flow.on_message(session, ui, "", [], "CLASSIFY"))

    assert len(ui.replies) == 2
    (notice,) = ui.notices
    assert re.fullmatch(
        r"\*\*Too many requests\.\*\* Rate limit of 2 per minute reached\. Try again in \d+ s\.", notice
    )


def test_second_request_while_classifying_is_told_to_wait(services: Services, cat_upload: Upload) -> None:
    ui, session, flow = RecordingUI(), ChatSession(identity="t"), ChatFlow(services)
    send_together(flow, session, ui, ("", [cat_upload], "CLASSIFY"), ("cat, dog", [cat_upload], "ZERO_SHOT"))
    assert [r.downloads[0].name for r in ui.replies] == ["cat · classes.json"]
    assert ui.notices == [BUSY_NOTICE]
    assert not session.busy


def test_full_model_queue_gives_a_clear_busy_message(
    services: Services, manager: ModelManager, cat_upload: Upload
) -> None:
    manager.get("classifier")
    release = threading.Event()
    # Occupy every place in the manager's queue, as a crowd of waiting requests would.
    blockers = [manager.submit(release.wait) for _ in range(manager.settings.max_queue_size)]
    try:
        ui = send(services, "", [cat_upload], "CLASSIFY")
    finally:
        release.set()
        for blocker in blockers:
            blocker.result(timeout=30)
    assert ui.replies == []
    assert ui.notices == ["**Busy.** The model is busy with other requests; try again in a few seconds."]
    assert ui.steps[0].failed


def test_uploads_are_validated_like_for_every_task(services: Services, tmp_path: Path, cat_upload: Upload) -> None:
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"this is text, not a PNG")
    ui = send(services, "cat, dog", [Upload("notes.png", fake), cat_upload], "ZERO_SHOT")
    (notice,) = ui.notices
    assert notice.startswith("**File refused.** notes.png")
    assert [r.image_name for r in ui.replies] == ["cat.png"]


def test_classifier_loads_on_first_use_behind_progress(classify_settings: Settings, cat_upload: Upload) -> None:
    with services_over(classify_settings, build_manager(classify_settings)) as services:
        ui = send(services, "", [cat_upload], "CLASSIFY")
    assert_loaded_behind_progress(ui, classify_settings.classifier_model_id)


def test_missing_zero_shot_model_says_which_setting_to_fix(
    classify_settings: Settings, cat_upload: Upload, tmp_path: Path
) -> None:
    settings = classify_settings.model_copy(update={"zero_shot_model_id": str(tmp_path / "no-such-clip")})
    with services_over(settings, build_manager(settings)) as services:
        ui = send(services, "a, b", [cat_upload], "ZERO_SHOT")
    assert ui.replies == [] and ui.progresses[0].failed
    (notice,) = ui.notices
    assert notice.startswith("**The model is not available.**\n\n") and "ZERO_SHOT_MODEL_ID" in notice
