"""End to end in headless Chromium: the real server (`python -m app serve`) with the tiny checkpoint.

Debian's `chromium` driven by the Python `playwright` package (no browser download). Screenshots of
every step go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
RATE_LIMIT_PER_MINUTE = 4
TIMEOUT_MS = 45_000


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Debian `chromium` is required for the browser test in CI")
        pytest.skip("Debian `chromium` is not installed")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)  # polling a starting process, not timing the app
    pytest.fail(f"the server did not answer within 90 s:\n{log.read_text()[-3000:]}")


def start_server(
    env_extra: dict[str, str], log: Path, scripted: dict[str, tuple[str, str]] | None = None
) -> Iterator[str]:
    """`python -m app serve` on a free port with `env_extra`, its output in `log`; stopped afterwards.

    With `scripted`, Florence-2 answers those texts (tests/scripted_server.py) through the real generate path.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WARMUP": "false", "CHAT_USERS": "", "HF_HUB_OFFLINE": "1", **env_extra}
    entry = ["app"]
    if scripted is not None:
        env["SCRIPTED_ANSWERS"] = json.dumps(scripted)
        entry = ["tests.scripted_server"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", *entry, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_serving(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(tiny_florence_dir: Path, tiny_clip_dir: Path) -> Iterator[str]:
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        "MODEL_ID": str(tiny_florence_dir),
        "ZERO_SHOT_MODEL_ID": str(tiny_clip_dir),
        "PRELOAD": "false",  # the first request shows the model loading
        "NUM_BEAMS": "1",
        "MAX_NEW_TOKENS": "24",
        "RATE_LIMIT": f"{RATE_LIMIT_PER_MINUTE}/minute",
        "RATE_LIMIT_STORAGE": "memory://",
        "LOG_LEVEL": "INFO",
    }
    yield from start_server(env, ARTIFACTS / "browser-server.log")


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory, photo: Image.Image) -> Path:
    path = tmp_path_factory.mktemp("upload") / "cat.png"
    photo.save(path)
    return path


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _pick_task(page: Any, name: str) -> None:
    page.click("#mode-picker-trigger-task")
    # Chainlit's picker is a listbox of options (name + description); the welcome text names tasks too.
    page.get_by_role("option").filter(has=page.get_by_text(name, exact=True)).click()
    page.locator("#mode-picker-trigger-task", has_text=name[:12]).wait_for()


def _send(page: Any, text: str) -> None:
    page.fill("#chat-input", text)
    page.click("#chat-submit")


def test_chat_end_to_end(server: str, png: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))

            # 1. The welcome names the model and says it loads with the first request.
            page.goto(server + "/")
            page.get_by_text("loads with the first request").wait_for()
            _shot(page, "01-welcome")

            # 2. The task picker: human names with one-line descriptions.
            page.click("#mode-picker-trigger-task")
            page.get_by_text("Boxes and category names for the objects.").wait_for()
            _shot(page, "02-task-picker")
            page.keyboard.press("Escape")
            _pick_task(page, "Object detection")

            # 3. Upload a PNG and run object detection: loading progress, annotated image, JSON download.
            with page.expect_response(lambda r: "/project/file" in r.url and r.request.method == "POST"):
                page.set_input_files("#upload-button-input", str(png))
            _send(page, "detect")
            page.get_by_text("loaded in").wait_for()
            json_link = page.get_by_text("cat · objects.json", exact=True)
            json_link.wait_for()
            picture = page.locator('img[alt="cat.annotated.png"]').first
            picture.wait_for()
            assert picture.evaluate("img => img.naturalWidth") == 451
            json_link.scroll_into_view_if_needed()
            _shot(page, "03-object-detection")
            with page.expect_download() as download_info:
                json_link.click()
            saved = tmp_path / "download.json"
            download_info.value.save_as(saved)
            body = json.loads(saved.read_text())
            assert (body["image"], body["kind"], body["task"], body["image_wh"]) == (
                "cat.png", "detections", "<OD>", [451, 300]
            )  # fmt: skip
            page.keyboard.press("Escape")

            # 4. A region task by typed coordinates; the task picked before stays until changed.
            _pick_task(page, "Region to description")
            _send(page, "40,30,400,290")
            region_reply = page.get_by_text("Region (40, 30, 400, 290)")
            region_reply.wait_for()
            page.get_by_text("cat · region description.json", exact=True).scroll_into_view_if_needed()
            _shot(page, "04-region-typed")

            # 5. The same task by dragging a box on the picker element.
            _send(page, "let me draw it")
            frame = page.get_by_test_id("region-picker-frame").last
            frame.scroll_into_view_if_needed()
            box = frame.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6, steps=6)
            page.mouse.up()
            picked = page.get_by_test_id("region-box").last.inner_text()
            x1, y1, x2, y2 = (int(v) for v in picked.split(","))
            assert 30 <= x1 < x2 <= 240 and 20 <= y1 < y2 <= 190, picked
            page.get_by_test_id("region-run").last.click()
            page.get_by_text(f"Region ({x1}, {y1}, {x2}, {y2})").wait_for()
            page.get_by_text("Sent: the answer is below.").scroll_into_view_if_needed()
            _shot(page, "05-region-picker")

            # 6. Zero-shot in a new chat session: labels typed, table and chart shown.
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(server + "/")
            page.get_by_text("Drop in one or more images").wait_for()
            _pick_task(page, "Zero-shot")
            with page.expect_response(lambda r: "/project/file" in r.url and r.request.method == "POST"):
                page.set_input_files("#upload-button-input", str(png))
            _send(page, "a cat, a dog, a red car")  # the fourth model request this minute
            chart = page.locator('img[alt="cat.chart.png"]').first
            chart.wait_for()
            assert chart.evaluate("img => img.naturalWidth") == 640
            page.get_by_role("cell", name="a red car").wait_for()
            page.get_by_text("cat · zero-shot.json", exact=True).scroll_into_view_if_needed()
            _shot(page, "07-zero-shot")

            # 7. Over the rate limit: the reply says when to try again. Without a login the budget belongs
            # to the client's address, so the new chat session above did not get a fresh one.
            _send(page, "a cat, a dog")  # the fifth
            limit = page.get_by_text(f"Rate limit of {RATE_LIMIT_PER_MINUTE} per minute reached")
            limit.wait_for()
            assert "Try again in" in limit.inner_text()
            _shot(page, "06-rate-limited")
        finally:
            browser.close()

    local = (server, "data:", "blob:" + server)
    external = [url for url in requested if not url.startswith(local)]
    assert requested and external == []


def test_api_docs_render_with_nothing_from_other_hosts(server: str) -> None:
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(server + "/redoc")  # sent on to /docs
            page.locator(".swagger-ui .opblock-summary-path", has_text="/api/v1/analyze").wait_for(timeout=TIMEOUT_MS)
            _shot(page, "08-api-docs")
            assert page.url == server + "/docs"
        finally:
            browser.close()
    assert [url for url in requested if not url.startswith(server)] == []
    assert server + "/docs-assets/swagger-ui-bundle.js" in requested


# -- engine fidelity (issue 12): several open-vocabulary classes, caption + grounding ----------------------
@pytest.fixture(scope="module")
def fidelity_server(tiny_florence_dir: Path) -> Iterator[str]:
    """A server of its own: the main test spends the other one's whole rate limit on purpose."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"MODEL_ID": str(tiny_florence_dir), "NUM_BEAMS": "1", "MAX_NEW_TOKENS": "24", "RATE_LIMIT": "100/minute"}
    yield from start_server({**env, "RATE_LIMIT_STORAGE": "memory://"}, ARTIFACTS / "browser-fidelity.log")


def _download_json(page: Any, name: str, tmp_path: Path) -> Any:
    link = page.get_by_text(name, exact=True).last
    link.wait_for()
    link.scroll_into_view_if_needed()
    with page.expect_download() as download_info:
        link.click()
    saved = tmp_path / name
    download_info.value.save_as(saved)
    return json.loads(saved.read_text())


def test_chat_open_vocabulary_classes_and_caption_grounding(fidelity_server: str, png: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.goto(fidelity_server + "/")
            page.locator("#chat-input").wait_for()

            # Several classes typed as a list: accepted (no "model tags" refusal), answered as detections.
            _pick_task(page, "Open-vocabulary detection")
            with page.expect_response(lambda r: "/project/file" in r.url and r.request.method == "POST"):
                page.set_input_files("#upload-button-input", str(png))
            _send(page, "cat, dog")
            body = _download_json(page, "cat · found.json", tmp_path)
            assert (body["task"], body["kind"]) == ("<OPEN_VOCABULARY_DETECTION>", "detections")
            assert all(isinstance(d["score"], float | int) for d in body["detections"])
            _shot(page, "07-open-vocabulary-classes")

            # Caption + grounding from the picker: one reply, the caption, one annotated image.
            _pick_task(page, "Caption + grounding")
            _send(page, "go")
            body = _download_json(page, "cat · grounded caption.json", tmp_path)
            assert (body["task"], body["kind"]) == ("<CAPTION_GROUNDING>", "detections")
            assert isinstance(body["caption"], str)
            assert page.locator('img[alt="cat.annotated.png"]').last.evaluate("img => img.naturalWidth") == 451
            _shot(page, "08-caption-grounding")
        finally:
            browser.close()
