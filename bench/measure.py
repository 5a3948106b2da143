"""What every benchmark script here shares: a results recorder, machine facts, timing and sample photos."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    def __init__(self, out: Path, deadline: float) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.jsonl"
        self.rows: list[dict[str, Any]] = []
        self.deadline = deadline

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()


# -- machine ---------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sms=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
    return info


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


@contextmanager
def peak_window() -> Iterator[None]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    yield


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - started)
    return times


def stats_ms(latencies: list[float]) -> dict[str, float]:
    arr = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 1), "p95_ms": round(float(np.percentile(arr, 95)), 1)}


def sample_images() -> list[Image.Image]:
    try:
        from skimage import data

        return [Image.fromarray(x) for x in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket())]
    except Exception:  # noqa: BLE001 - scikit-image missing or without its sample files: noise photos
        rng = np.random.default_rng(0)
        sizes = [(512, 512), (451, 300), (600, 400), (427, 640)]
        return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def batching_counts(manager: Any) -> tuple[int, int, int]:
    batching = manager.status()[0].get("batching", {})
    return batching.get("batches", 0), batching.get("requests", 0), batching.get("split_retries", 0)
