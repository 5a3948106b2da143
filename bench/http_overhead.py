"""Server overhead: POST /api/v1/analyze over real HTTP against the same request run in-process.

Starts the app with the tiny checkpoint under uvicorn in its own process (as `python -m app serve`
would) and times, interleaved so drift cancels:

- (a) `ModelManager.analyze` in this process on an already decoded image, with the same settings
  (model time, batching included);
- (b) the same from the PNG's bytes: `load_image_bytes` (checks and decoding) and then (a), what a
  Python program using the library does with a file;
- (c) the HTTP request with the PNG upload from this process (client, socket, multipart parsing,
  decoding, validation, rate limiting, JSON).

The server's overhead is p50(c) - p50(b): the HTTP stack, on top of the work any caller needs.
p50(c) - p50(a) is printed too (it also counts decoding the upload). A /healthz round trip is timed.

    python -m bench.http_overhead --requests 60
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
from PIL import Image

from app.core.config import Settings
from app.core.images import ImageLimits, load_image_bytes
from app.core.tasks import get_task
from app.models.base import TaskRequest
from app.models.manager import ModelManager
from bench.measure import ROOT
from tests.tiny_models import build_tiny_florence


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from skimage import data

    image = Image.fromarray(data.chelsea())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_tiny_florence(Path(tmp) / "tiny")
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            model_id=str(ckpt),
            num_beams=1,
            max_new_tokens=args.max_new_tokens,
            warmup=True,
        )
        env = {
            **os.environ,
            "MODEL_ID": str(ckpt),
            "NUM_BEAMS": "1",
            "MAX_NEW_TOKENS": str(args.max_new_tokens),
            "AUTH_DISABLED": "true",
            "RATE_LIMIT": "",
            "DATA_DIR": str(Path(tmp) / "data"),
            "LOG_LEVEL": "WARNING",
        }
        port = free_port()
        code = (
            "import uvicorn; from app.core.config import Settings; from app.serving.server import create_app; "
            f"uvicorn.run(create_app(Settings(_env_file=None)), host='127.0.0.1', port={port}, log_level='warning')"
        )
        server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
        manager = ModelManager(settings)
        manager.get()
        request = TaskRequest.create(image, get_task("<CAPTION>"))
        limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        direct: list[float] = []
        from_bytes: list[float] = []
        http: list[float] = []
        health: list[float] = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                for _ in range(600):  # until the server has loaded the model
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)

                def over_http() -> None:
                    response = client.post(
                        "/api/v1/analyze", data={"task": "<CAPTION>"}, files={"files": ("cat.png", png, "image/png")}
                    )
                    response.raise_for_status()

                for _ in range(3):  # warm every path
                    manager.run([request])
                    load_image_bytes(png, limits, "cat.png")
                    over_http()
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    manager.run([request])
                    direct.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    loaded = load_image_bytes(png, limits, "cat.png")
                    manager.run([TaskRequest.create(loaded.image, get_task("<CAPTION>"))])
                    from_bytes.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    over_http()
                    http.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    client.get("/healthz").raise_for_status()
                    health.append(time.perf_counter() - t0)
        finally:
            server.terminate()
            server.wait(timeout=30)
            manager.shutdown()

    def ms(samples: list[float], q: int = 50) -> float:
        return round(float(np.percentile(samples, q)) * 1000, 2)

    row = {
        "stage": "http_overhead",
        "requests": args.requests,
        "image": f"{image.width}x{image.height} PNG, {len(png)} bytes",
        "decoded_p50_ms": ms(direct),
        "from_bytes_p50_ms": ms(from_bytes),
        "http_p50_ms": ms(http),
        "overhead_p50_ms": round(ms(http) - ms(from_bytes), 2),
        "overhead_incl_decoding_p50_ms": round(ms(http) - ms(direct), 2),
        "decoded_p95_ms": ms(direct, 95),
        "from_bytes_p95_ms": ms(from_bytes, 95),
        "http_p95_ms": ms(http, 95),
        "healthz_p50_ms": ms(health),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "http_overhead.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
