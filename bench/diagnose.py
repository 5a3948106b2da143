"""Where the time goes in one Florence-2 batch (GPU), timed on the backend directly (no manager, no
client threads): first vs repeated calls, per-step cost by batch size, a profiler table of host-side
hot spots, and torch.compile of the vision encoder.

    python -m bench.diagnose --out bench/results --stages steps,profile,compile_vision
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from bench.measure import ROOT, Recorder, machine_info, sample_images, sync


def load_backend(ckpt: Path, **overrides: Any) -> Any:
    from app.core.config import Settings
    from app.models.florence import FlorenceBackend

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_id=str(ckpt),
        num_beams=1,
        max_new_tokens=1024,
        warmup=False,
        **overrides,
    )
    backend = FlorenceBackend(settings)
    backend.load()
    return backend


def batch_of(backend: Any, batch: int, task: str = "<CAPTION>") -> list[Any]:
    from app.core.tasks import get_task
    from app.models.base import TaskRequest

    images = sample_images()
    spec = get_task(task)
    return [backend.prepare(TaskRequest.create(images[i % len(images)], spec)) for i in range(batch)]


def call(backend: Any, prepared: list[Any], tokens: int, beams: int = 1) -> float:
    from app.models.florence import GenerationOptions

    options = GenerationOptions(num_beams=beams, max_new_tokens=tokens, min_new_tokens=tokens)
    sync()
    started = time.perf_counter()
    backend.generate_texts(prepared, options)
    sync()
    return time.perf_counter() - started


def stage_steps(rec: Recorder, backend: Any) -> None:
    for batch in (1, 4, 32):
        prepared = batch_of(backend, batch)
        first = call(backend, prepared, 20)
        again = [call(backend, prepared, 20) for _ in range(2)]
        long = [call(backend, prepared, 60) for _ in range(2)]
        per_step = (min(long) - min(again)) / 40
        rec.add(
            stage="steps", batch=batch, first_ms=round(first * 1000, 1), repeat_20_ms=round(min(again) * 1000, 1),
            repeat_60_ms=round(min(long) * 1000, 1), per_step_ms=round(per_step * 1000, 2),
            fixed_ms=round((min(again) - 20 * per_step) * 1000, 1),
        )  # fmt: skip


def stage_profile(rec: Recorder, backend: Any, out: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    for batch in (1, 4):
        prepared = batch_of(backend, batch)
        call(backend, prepared, 20)
        activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
        with profile(activities=activities) as prof:
            call(backend, prepared, 20)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=60)
        (out / f"profile_b{batch}.txt").write_text(table)
        cuda_table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=60)
        (out / f"profile_b{batch}_cuda.txt").write_text(cuda_table)
        print(table[:6000], flush=True)
        rec.add(stage="profile", batch=batch, file=f"profile_b{batch}.txt")


def stage_sdp_ab(rec: Recorder, backend: Any) -> None:
    """Same process, same shapes: SDPA with cuDNN attention allowed vs not, alternated to cancel drift."""
    for batch in (1, 32):
        prepared = batch_of(backend, batch)
        for allow_cudnn in (True, False, True, False):
            torch.backends.cuda.enable_cudnn_sdp(allow_cudnn)
            call(backend, prepared, 60)  # unmeasured: first use of each shape with this backend
            short = min(call(backend, prepared, 20) for _ in range(2))
            long = min(call(backend, prepared, 60) for _ in range(2))
            rec.add(
                stage="sdp_ab", batch=batch, cudnn_sdp=allow_cudnn, repeat_20_ms=round(short * 1000, 1),
                per_step_ms=round((long - short) / 40 * 1000, 2),
            )  # fmt: skip
    torch.backends.cuda.enable_cudnn_sdp(False)


def stage_compile_vision(rec: Recorder, backend: Any) -> None:
    model = backend._model
    tower = model.model.vision_tower
    compiled = torch.compile(tower, dynamic=False)
    dtype = next(model.parameters()).dtype
    for batch in (1, 8, 32):
        if rec.left() < 45:
            rec.add(stage="compile_vision", skipped=f"batch {batch}")
            continue
        pixels = torch.randn(batch, 3, 768, 768, device="cuda", dtype=dtype)
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            compiled(pixels)
            sync()
            first = time.perf_counter() - t0
            times = []
            for fn in (tower, compiled, tower, compiled):
                sync()
                t0 = time.perf_counter()
                fn(pixels)
                sync()
                times.append(time.perf_counter() - t0)
        rec.add(
            stage="compile_vision", batch=batch, compile_s=round(first, 1), eager_ms=round(min(times[0::2]) * 1000, 1),
            compiled_ms=round(min(times[1::2]) * 1000, 1),
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", type=Path, default=Path("/tmp/florence-2-large-random"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--stages", default="steps,profile,compile_vision")
    parser.add_argument("--budget-s", type=float, default=400)
    args = parser.parse_args()
    rec = Recorder(args.out, time.monotonic() + args.budget_s)
    rec.add(stage="machine", **machine_info())
    from bench.checkpoints import build_checkpoint

    build_checkpoint("large", args.ckpt, device="cuda")
    stages = args.stages.split(",")
    backend = load_backend(args.ckpt)
    for stage in stages:
        if stage == "steps":
            stage_steps(rec, backend)
        elif stage == "profile":
            stage_profile(rec, backend, args.out)
        elif stage == "sdp_ab":
            stage_sdp_ab(rec, backend)
        elif stage == "compile_vision":
            stage_compile_vision(rec, backend)


if __name__ == "__main__":
    main()
