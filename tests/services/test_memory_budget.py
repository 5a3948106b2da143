"""The decoded-pixel budget: 413 per request before decoding, FIFO queueing across the process, and the
peak memory of a real server process under the hostile run's request (16 PNGs of 6000x6000)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from app.core.errors import Busy, PayloadTooLarge
from app.services.pixel_budget import PixelBudget
from tests.jobs_support import REPO, free_port, wait_for

LIMIT_GIB = 1.5


def test_a_request_over_the_per_request_budget_is_413_with_the_limit() -> None:
    budget = PixelBudget(per_request=100, in_flight=1000)
    budget.check_request(100)
    with pytest.raises(PayloadTooLarge) as refused:
        budget.check_request(101)
    assert refused.value.code == "request_too_many_pixels" and "100" in refused.value.message


def test_requests_wait_their_turn_within_the_in_flight_budget() -> None:
    async def scenario() -> list[str]:
        budget = PixelBudget(per_request=100, in_flight=100)
        order: list[str] = []

        async def request(name: str, pixels: int, started: asyncio.Event, release: asyncio.Event) -> None:
            async with budget.hold(pixels):
                order.append(f"{name} in (used {budget.used})")
                started.set()
                await release.wait()
            order.append(f"{name} out")

        events = {name: (asyncio.Event(), asyncio.Event()) for name in "abc"}
        a = asyncio.create_task(request("a", 60, *events["a"]))
        await events["a"][0].wait()
        b = asyncio.create_task(request("b", 60, *events["b"]))  # does not fit beside a
        c = asyncio.create_task(request("c", 30, *events["c"]))  # fits, but waits behind b (FIFO)
        await asyncio.sleep(0)
        assert budget.used == 60 and order == ["a in (used 60)"]
        events["a"][1].set()
        await events["b"][0].wait()
        await events["c"][0].wait()
        events["b"][1].set()
        events["c"][1].set()
        await asyncio.gather(a, b, c)
        assert budget.used == 0
        return order

    assert asyncio.run(scenario()) == ["a in (used 60)", "a out", "b in (used 90)", "c in (used 90)", "b out", "c out"]


def test_a_request_that_waits_too_long_gets_busy_and_a_cancelled_one_gives_back_its_place() -> None:
    async def scenario() -> None:
        budget = PixelBudget(per_request=100, in_flight=100, max_wait_s=0.2)
        async with budget.hold(100):
            with pytest.raises(Busy):
                async with budget.hold(10):
                    pass
            waiting = asyncio.create_task(_hold_once(budget, 10))
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert budget.used == 0
        async with budget.hold(100):  # nothing was leaked
            assert budget.used == 100

    asyncio.run(scenario())


async def _hold_once(budget: PixelBudget, pixels: int) -> None:
    async with budget.hold(pixels):
        pass


# -- a real server process: peak RSS (VmHWM) before and after the requests ---------------------------------
def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _big_png_b64() -> str:
    buffer = io.BytesIO()
    image = Image.new("RGB", (6000, 6000), "white")
    image.paste((200, 30, 30), (1000, 1000, 5000, 5000))
    image.save(buffer, format="PNG", optimize=False, compress_level=9)
    return base64.b64encode(buffer.getvalue()).decode()


def _post(port: int, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/analyze",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for the peak RSS")
def test_the_hostile_request_does_not_raise_the_server_peak_memory_past_the_budget(
    tiny_florence_dir: Path, tmp_path: Path
) -> None:
    port = free_port(range(18250, 18299))
    env = {
        **os.environ,
        "MODEL_ID": str(tiny_florence_dir),
        "WARMUP": "false",
        "AUTH_DISABLED": "true",
        "RATE_LIMIT": "",
        "DATA_DIR": str(tmp_path),
        "NUM_BEAMS": "1",
        "MAX_NEW_TOKENS": "4",
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, 120, "the server to load the model")
        small = base64.b64encode(_png_small()).decode()
        assert _post(port, {"task": "CAPTION", "images": [{"base64": small}]})[0] == 200  # loaded and warm
        loaded_peak = _peak_rss_bytes(server.pid)

        big = _big_png_b64()
        status, body = _post(port, {"task": "CAPTION", "images": [{"base64": big}] * 16})
        assert status == 413 and body["error"]["code"] == "request_too_many_pixels"  # type: ignore[index]
        # Within the per-request budget (4 x 36 MP = 144 MP), the images are decoded and analysed.
        status, body = _post(port, {"task": "CAPTION", "images": [{"base64": big}] * 4})
        assert status == 200, body
        growth = _peak_rss_bytes(server.pid) - loaded_peak
        print(f"peak RSS growth over the loaded server: {growth / 2**30:.2f} GiB")
        assert growth < LIMIT_GIB * 2**30
    finally:
        server.terminate()
        server.wait(timeout=30)


def _png_small() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, format="PNG")
    return buffer.getvalue()
