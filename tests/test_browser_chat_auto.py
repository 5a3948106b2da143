"""End to end in headless Chromium, second pass: Auto mode, follow-up buttons, box numbers, honest steps,
the combined COCO download, a starter, a zero-byte upload and legibility on a 390x844 phone screen.

Same server and browser set-up as `test_browser_chat`, with a rate limit high enough for every run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.test_browser_chat import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    REPO_ROOT,
    TIMEOUT_MS,
    _chromium,
    _free_port,
    _send,
    _shot,
    _wait_until_serving,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def auto_server(tiny_florence_dir: Path) -> Iterator[tuple[str, Path]]:
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MODEL_ID": str(tiny_florence_dir),
        "WARMUP": "false",
        "PRELOAD": "true",
        "NUM_BEAMS": "1",
        "MAX_NEW_TOKENS": "24",
        "RATE_LIMIT": "1000/minute",
        "RATE_LIMIT_STORAGE": "memory://",
        "CHAT_USERS": "",
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "INFO",
    }
    log = ARTIFACTS / "browser-auto-server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_serving(url, process, log)
            yield url, log
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
