"""End to end in headless Chromium, second pass: Auto mode, follow-up buttons, box numbers, honest steps,
the combined COCO download, a starter, a zero-byte upload and legibility on a 390x844 phone screen.

Same server and browser set-up as `test_browser_chat`, with a rate limit high enough for every run here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.rendering.drawing import Annotator
from tests.chat.test_browser_chat import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    _chromium,
    _pick_task,
    _send,
    _shot,
    start_server,
)
from tests.scripted_support import BOX_A, BOX_B

pytestmark = pytest.mark.browser


# Answers with boxes, chosen by prompt (the random tiny model's own answers may hold none).
SCRIPTED = {
    "Locate the objects": ("cat" + BOX_A + "dog" + BOX_B, ""),
    "Locate the region proposals": (BOX_A + BOX_B, ""),
    "Locate the phrases": ("a cat" + BOX_A, ""),
    "Locate ": ("cat" + BOX_B + "cat" + BOX_A, ""),  # open-vocabulary detection of whatever was asked
    "": ("a cat sitting on a red car", ""),  # captions, OCR, region texts
}


@pytest.fixture(scope="module")
def auto_server(tiny_florence_dir: Path) -> Iterator[tuple[str, Path]]:
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        "MODEL_ID": str(tiny_florence_dir),
        "PRELOAD": "true",
        "NUM_BEAMS": "1",
        "MAX_NEW_TOKENS": "24",
        "RATE_LIMIT": "1000/minute",
        "RATE_LIMIT_STORAGE": "memory://",
        "LOG_LEVEL": "INFO",
    }
    log = ARTIFACTS / "browser-auto-server.log"
    for url in start_server(env, log, SCRIPTED):
        yield url, log


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, photo: Image.Image) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    paths = {"cat": folder / "cat.png", "yard": folder / "yard.png", "empty": folder / "empty.png"}
    photo.save(paths["cat"])
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(paths["yard"])
    paths["empty"].write_bytes(b"")
    return paths


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _open_chat(browser: Any, url: str, viewport: dict[str, int] | None = None) -> Any:
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url + "/")
    page.get_by_text("Drop in one or more images").wait_for()
    return page


def _upload(page: Any, *paths: Path) -> None:
    with page.expect_response(lambda r: "/project/file" in r.url and r.request.method == "POST"):
        page.set_input_files("#upload-button-input", [str(p) for p in paths])


def _reply(page: Any, heading: str) -> Any:
    """The newest assistant message whose text contains `heading`."""
    found = page.get_by_text(heading).last
    found.wait_for()
    return found


def test_messages_pick_their_task_and_follow_ups_run_without_typing(
    auto_server: tuple[str, Path], images: dict[str, Path], browser: Any
) -> None:
    url, _ = auto_server
    page = _open_chat(browser, url)
    _upload(page, images["cat"])
    _send(page, "find the cat")
    _reply(page, "Open-vocabulary detection of cat")
    _shot(page, "21-auto-find")
    _send(page, "read the text")
    _reply(page, "cat.png — OCR")
    _send(page, "describe it in detail")
    _reply(page, "cat.png — Detailed caption")
    _shot(page, "22-auto-detailed")

    # The newest reply's buttons run the next task on the same image, no typing.
    page.get_by_role("button", name="Objects").last.click()
    _reply(page, "cat.png — Object detection")
    _shot(page, "23-follow-up")


def test_box_numbers_after_a_detection_and_a_failed_run_shown_as_failed(
    auto_server: tuple[str, Path], images: dict[str, Path], browser: Any
) -> None:
    url, _ = auto_server
    page = _open_chat(browser, url)
    _upload(page, images["cat"])
    _send(page, "where is the cat?")
    _reply(page, "Open-vocabulary detection of cat")
    # The scripted answer has two boxes; #2 is the larger one.
    listed = page.get_by_text("#2 ").last.inner_text()  # "#2 label (x1, y1, x2, y2)"
    box = listed[listed.rindex("(") :]

    _send(page, "what is in box 2")
    _reply(page, "cat.png — Region to description of box 2")
    page.get_by_text(f"Region {box}").last.wait_for()  # the same box the detection listed as #2
    _shot(page, "24-box-number")

    # "Ask about a box" opens the region picker, which can start from a numbered box.
    page.get_by_role("button", name="Ask about a box").last.click()
    page.get_by_test_id("region-numbered").last.get_by_role("button", name="#2").click()
    assert page.get_by_test_id("region-box").last.inner_text() == box.strip("()").replace(" ", "")
    _shot(page, "24b-picker-numbered")
    page.get_by_test_id("region-run").last.click()
    page.get_by_text(f"Region {box}").nth(1).wait_for()  # a second answer about the same box

    _send(page, "what is in box 9")
    page.get_by_text("Region to description failed").last.wait_for()
    page.get_by_text("so there is no box 9").last.wait_for()
    assert page.get_by_text("Region to description in").count() == 2  # only the two runs that worked
    _shot(page, "25-failed-run")


def test_an_empty_message_runs_the_picked_task_and_two_images_share_one_coco_file(
    auto_server: tuple[str, Path], images: dict[str, Path], browser: Any, tmp_path: Path
) -> None:
    url, _ = auto_server
    page = _open_chat(browser, url)
    _pick_task(page, "Region proposal")
    _upload(page, images["cat"], images["yard"])
    page.click("#chat-submit")  # no text: the picked task runs
    link = page.get_by_text("2 images · region proposals.coco.json", exact=True)
    link.wait_for()
    link.scroll_into_view_if_needed()
    _shot(page, "26-two-images")
    # Every chip shows its whole name (JSON and COCO of an image must not look the same).
    names = page.locator("a.inline-file span.truncate")
    assert names.evaluate_all("spans => spans.every(s => s.scrollWidth <= s.clientWidth)")
    chips = page.locator("a.inline-file").all_inner_texts()
    assert [c.split("\n")[-1] for c in chips] == [
        "cat · region proposals.json", "cat · region proposals.coco.json",
        "yard · region proposals.json", "yard · region proposals.coco.json",
        "2 images · region proposals.coco.json",
    ]  # fmt: skip
    with page.expect_download() as download_info:
        link.click()
    saved = tmp_path / "combined.json"
    download_info.value.save_as(saved)
    dataset = json.loads(saved.read_text())
    assert [(i["id"], i["file_name"]) for i in dataset["images"]] == [(1, "cat.png"), (2, "yard.png")]
    assert {a["image_id"] for a in dataset["annotations"]} == {1, 2}
    assert len({a["id"] for a in dataset["annotations"]}) == len(dataset["annotations"]) > 0


def test_a_starter_runs_on_its_sample_image(auto_server: tuple[str, Path], browser: Any) -> None:
    url, _ = auto_server
    page = _open_chat(browser, url)
    _shot(page, "27-welcome-starters")
    assert not page.get_by_text("LLMs can make mistakes").is_visible()
    page.get_by_role("button", name="Read a sign").click()  # a button on the welcome
    _reply(page, "sign.png — OCR")
    page.locator('img[alt="sign.thumbnail.png"]').wait_for()
    _shot(page, "28-starter")


def test_a_zero_byte_upload_is_refused_in_one_line_without_a_traceback(
    auto_server: tuple[str, Path], images: dict[str, Path], browser: Any
) -> None:
    url, log = auto_server
    page = _open_chat(browser, url)
    with page.expect_response(lambda r: "/project/file" in r.url and r.request.method == "POST") as answer:
        page.set_input_files("#upload-button-input", str(images["empty"]))
    assert answer.value.status == 400
    page.get_by_text("empty.png is empty (0 bytes): send an image file of up to 20 MB.").wait_for()
    _shot(page, "29-zero-byte")
    assert "Traceback" not in log.read_text()


def test_labels_read_at_eleven_px_on_a_390_px_phone(
    auto_server: tuple[str, Path], images: dict[str, Path], browser: Any
) -> None:
    url, _ = auto_server
    page = _open_chat(browser, url, viewport={"width": 390, "height": 844})
    _upload(page, images["cat"])
    _send(page, "find the cat")
    picture = page.locator('img[alt="cat.annotated.png"]').last
    picture.wait_for()
    picture.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    natural = picture.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    shown_width = picture.evaluate("img => img.getBoundingClientRect().width")
    label_px = Annotator().font_size((natural[0], natural[1])) * shown_width / natural[0]
    _shot(page, "30-phone-390")
    assert shown_width < 390 and label_px >= 11, (natural, shown_width, label_px)
    # The upload in the user's own message is a small tile, not a second full-width picture.
    tile = page.locator("div.items-end img.inline-image").last
    tile.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=tile.element_handle())
    assert tile.evaluate("img => img.getBoundingClientRect().width") <= 96
    _shot(page, "31-phone-upload-tile")
