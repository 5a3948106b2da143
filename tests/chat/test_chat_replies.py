"""Chat wording: summaries per result kind, downloads, error messages (pure functions)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from app.chat.inputs import find_box_reference, find_coordinates, region_from_payload, regions_from_text
from app.chat.replies import (
    code_block,
    error_markdown,
    escape_md,
    everything_downloads,
    model_in_words,
    result_downloads,
    summary_markdown,
    welcome_markdown,
)
from app.core.config import Settings
from app.core.errors import AppError, Busy, InvalidImage, InvalidInput, ModelUnavailable, RateLimited
from app.core.results import DetectionResult, OCRResult, RunInfo, SegmentationResult, TextResult
from app.core.tasks import get_task

SETTINGS = Settings(_env_file=None, model_id="org/model", device="auto", dtype="auto")  # type: ignore[call-arg]


def detections() -> DetectionResult:
    boxes = [(0, 0, 10, 10), (5, 5, 20, 30.4), (1, 1, 2, 2)]
    return DetectionResult.from_boxes("<OD>", (100, 50), boxes, ["cat", "dog", "cat"])


def test_detection_summary_counts_labels_and_numbers_boxes() -> None:
    assert summary_markdown(get_task("OD"), detections()) == (
        "3 found: cat ×2, dog\n\n- \\#1 cat (0, 0, 10, 10)\n- \\#2 dog (5, 5, 20, 30)\n- \\#3 cat (1, 1, 2, 2)"
    )


def test_long_box_lists_are_cut_with_a_pointer_to_the_json() -> None:
    many = DetectionResult.from_boxes("<OD>", (100, 100), [(i, i, i + 1, i + 1) for i in range(25)], ["x"] * 25)
    text = summary_markdown(get_task("OD"), many)
    assert text.splitlines()[-1] == "… and 5 more in the JSON download"
    assert "\n- \\#20 x (19, 19, 20, 20)\n" in text and "#21 " not in text


def test_caption_is_escaped_so_model_output_cannot_inject_markup() -> None:
    result = TextResult("<CAPTION>", (10, 10), text="A <b>cat</b> [link](http://x) *bold*")
    assert summary_markdown(get_task("CAPTION"), result) == ("A \\<b\\>cat\\</b\\> \\[link\\]\\(http://x\\) \\*bold\\*")


def test_ocr_text_is_a_code_block_that_backticks_cannot_close() -> None:
    result = TextResult("<OCR>", (10, 10), text="total ``` 42\nline two")
    assert summary_markdown(get_task("OCR"), result) == "````text\ntotal ``` 42\nline two\n````"
    assert code_block("plain") == "```text\nplain\n```"


def test_ocr_with_regions_lists_the_lines() -> None:
    quads = [(0, 0, 10, 0, 10, 5, 0, 5), (0, 6, 10, 6, 10, 9, 0, 9)]
    result = OCRResult.from_quads("<OCR_WITH_REGION>", (10, 10), quads, ["HELLO", "WORLD"])
    assert summary_markdown(get_task("OCR_WITH_REGION"), result) == "2 text lines\n\n```text\nHELLO\nWORLD\n```"


def test_region_results_say_which_region() -> None:
    result = TextResult("<REGION_TO_CATEGORY>", (100, 100), text="cat", region=(1.4, 2, 30, 40.6))
    assert summary_markdown(get_task("REGION_TO_CATEGORY"), result) == "Region (1, 2, 30, 41)\n\ncat"


def test_segmentation_summary_numbers_instances() -> None:
    result = SegmentationResult.from_polygons(
        "<REFERRING_EXPRESSION_SEGMENTATION>", (50, 50), [[[0, 0, 10, 0, 10, 10]]], ["cat"]
    )
    assert summary_markdown(get_task("REFERRING_EXPRESSION_SEGMENTATION"), result) == (
        "1 mask\\(s\\): cat\n\n- \\#1 cat (0, 0, 10, 10)"
    )


def answered_by(model: str, result: TextResult | DetectionResult) -> TextResult | DetectionResult:
    """The result as the model manager hands it over: stamped with the model that answered."""
    return replace(result, run=RunInfo(0.5, model, "library-1.0"))


def test_downloads_have_the_full_result_and_coco_for_boxes() -> None:
    result = answered_by("org/model", detections())
    json_file, coco_file = result_downloads("my photo.JPG", get_task("OD"), result)
    assert json_file.name == "my_photo · objects.json" and coco_file.name == "my_photo · objects.coco.json"
    assert json.loads(json_file.content) == {"image": "my photo.JPG", "model": "org/model", **result.to_dict()}
    assert json.loads(coco_file.content) == result.to_coco(file_name="my photo.JPG")
    text = TextResult("<CAPTION>", (10, 10), text="a cat")
    assert [d.name for d in result_downloads("a.png", get_task("CAPTION"), text)] == ["a · caption.json"]
    empty = DetectionResult.from_boxes("<OD>", (10, 10), [], [])
    assert [d.name for d in result_downloads("a.png", get_task("OD"), empty)] == ["a · objects.json"]


def test_everything_download_holds_all_three_results() -> None:
    caption = answered_by("m", TextResult("<CAPTION>", (100, 50), text="a cat"))
    results = {"<CAPTION>": caption, "<OD>": answered_by("m", detections())}
    all_file, coco_file = everything_downloads("x.png", results)
    body = json.loads(all_file.content)
    assert body == {"image": "x.png", "model": "m", "results": {k: v.to_dict() for k, v in results.items()}}
    assert coco_file.name == "x · objects.coco.json"
    # OCR_BACKEND=rapidocr: the text comes from another model, and the download says which answered what.
    results["<OCR>"] = answered_by("rapidocr", TextResult("<OCR>", (100, 50), text="HELLO"))
    body = json.loads(everything_downloads("x.png", results)[0].content)
    assert body["model"] == "m" and body["models"] == {"<CAPTION>": "m", "<OD>": "m", "<OCR>": "rapidocr"}


def test_welcome_names_the_model_in_words_and_its_state() -> None:
    ready = [
        {"state": "ready", "model_id": "florence-community/Florence-2-large", "device": "cuda", "dtype": "bfloat16"}
    ]
    assert welcome_markdown(ready, SETTINGS).startswith(
        "**Florence\\-2 large** is loaded and ready on cuda (bfloat16)."
    )
    idle = [{"state": "not_loaded", "model_id": "/models/Florence-2-base-ft/", "device": "cpu", "dtype": "float32"}]
    assert welcome_markdown(idle, SETTINGS).startswith(
        "**Florence\\-2 base \\(fine\\-tuned\\)** loads with the first request"
    )
    assert "*find the cars*" in welcome_markdown(idle, SETTINGS)
    assert model_in_words("/tmp/tiny-checkpoint") == "tiny-checkpoint"
    assert model_in_words("microsoft/resnet-50") == "resnet-50"


def test_a_failed_model_load_keeps_its_commands_and_links_intact() -> None:
    error = "Cannot load. Run `hf download x --local-dir ./models/x` or give access to https://huggingface.co. <b>"
    failed = [{"state": "failed", "model_id": "org/Florence-2-large", "error": error}]
    assert welcome_markdown(failed, SETTINGS) == (
        "**Florence\\-2 large failed to load.**\n\nCannot load. Run `hf download x --local-dir ./models/x` or "
        "give access to https://huggingface.co. \\<b\\>"
    )


def test_errors_become_friendly_messages_without_internals() -> None:
    assert error_markdown(RateLimited("Slow down. Try again in 7 s.", retry_after=7)) == (
        "**Too many requests.** Slow down. Try again in 7 s."
    )
    assert error_markdown(ModelUnavailable("Missing weights. To fix it, ...")) == (
        "**The model is not available.**\n\nMissing weights. To fix it, ..."
    )
    assert error_markdown(Busy("Queue full.")) == "**Busy.** Queue full."
    assert error_markdown(InvalidImage("x.png: broken.")) == "**File refused.** x.png: broken."
    assert error_markdown(InvalidInput("No box 3.")) == "**Cannot run that.** No box 3."
    assert error_markdown(AppError("Plain.")) == "**Error.** Plain."
    hidden = error_markdown(KeyError("/etc/secret"))
    assert "secret" not in hidden and hidden.startswith("Something went wrong on our side (reference `")


def test_escape_md_flattens_whitespace() -> None:
    assert escape_md("two\n\nlines #1") == "two lines \\#1"


# -- message parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "number"),
    [("box 2", 2), ("Box #12 please", 12), ("#3", 3), ("what is in box 1?", 1), ("boxes", None), ("x2", None)],
)
def test_find_box_reference(text: str, number: int | None) -> None:
    assert find_box_reference(text) == number


@pytest.mark.parametrize(
    ("text", "xyxy"),
    [
        ("10,20,30,40", (10, 20, 30, 40)),
        ("[10 20 30 40]", (10, 20, 30, 40)),
        ("look at 1.5, 2, 30.25, 40 please", (1.5, 2, 30.25, 40)),
        ("box 2", None),
        ("10 20 30", None),
    ],
)
def test_find_coordinates(text: str, xyxy: tuple[float, ...] | None) -> None:
    assert find_coordinates(text) == xyxy


def test_regions_from_text_maps_box_numbers_per_image() -> None:
    first = DetectionResult.from_boxes("<OD>", (100, 100), [(0, 0, 5, 5), (10, 10, 20, 20)], ["a", "b"])
    second = DetectionResult.from_boxes("<OD>", (100, 100), [(1, 1, 6, 6)], ["a"])
    regions = regions_from_text("box 2", 2, {0: first, 1: second})
    assert regions is not None and regions[0] == (10, 10, 20, 20)
    assert isinstance(regions[1], InvalidInput) and "has 1 on this image, so there is no box 2" in regions[1].message
    assert regions_from_text("5,5,50,50", 2, {}) == [(5, 5, 50, 50), (5, 5, 50, 50)]
    assert regions_from_text("hello", 1, {0: first}) is None


def test_region_payload_validation_accepts_numbers_only() -> None:
    assert region_from_payload({"image_index": 1, "xyxy": [1, 2.5, 3, 4]}, 2) == (1, (1, 2.5, 3, 4))
    for bad in ({"image_index": True, "xyxy": [1, 2, 3, 4]}, {"image_index": 0, "xyxy": [1, 2, 3, float("nan")]}):
        with pytest.raises(InvalidInput):
            region_from_payload(bad, 2)


def test_coordinates_that_look_normalised_get_a_hint_about_pixels() -> None:
    with pytest.raises(InvalidInput, match=r"`0\.1,0\.2,0\.5,0\.6` looks like fractions of the image size.*in pixels"):
        regions_from_text("0.1,0.2,0.5,0.6", 1, {})
    assert regions_from_text("0,0,1,1", 1, {}) == [(0, 0, 1, 1)]  # whole pixels stay pixels
