"""Serving benchmark: the original demo's naive loop against this server's batched path.

Builds a full-size Florence-2 checkpoint with random weights (bench/checkpoints.py), forces fixed
output lengths (min_new_tokens = max_new_tokens: 20 like a caption, 100 like detection, 300 like OCR
with regions) and measures images/s, p50/p95 latency and peak GPU memory for:

- naive: one request at a time, float32, processor called per request (the demo's loop);
- server: `ModelManager.analyze` from C concurrent in-process clients (bf16 on CUDA, SDPA,
  dynamic batching, inputs built by `app/models/florence_inputs.py`), greedy and 3 beams;
- variants: static KV cache;
- ceilings (CUDA, bench/gpu_stages.py): measured bf16 matmul rate and copy bandwidth, the vision
  encoder's FLOPs and the decoder's weight bytes per step;
- oom (CUDA, bench/gpu_stages.py): a real out-of-memory inside a batch (memory capped), which must
  split and recover.

Results go to OUT/results.jsonl (one JSON object per measurement) and a table on stdout.

    python -m bench.serving_bench --size large --stages ceilings,server20,naive,server --out bench/results
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bench.measure import (
    ROOT,
    Recorder,
    batching_counts,
    machine_info,
    peak_gib,
    peak_window,
    sample_images,
    stats_ms,
    sync,
)

TASK_FOR_LENGTH = {20: "<CAPTION>", 100: "<OD>", 300: "<OCR_WITH_REGION>"}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# -- naive loop --------------------------------------------------------------------------------------------
def run_naive(rec: Recorder, ckpt: Path, lengths: list[int], beams_list: list[int], cap_s: float) -> dict:
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(ckpt)
    model = Florence2ForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).to(DEVICE).eval()
    images = sample_images()
    found: dict[tuple[int, int], float] = {}

    def one(image: Image.Image, task: str, length: int, beams: int) -> None:
        inputs = processor(text=task, images=image, return_tensors="pt").to(DEVICE)
        with torch.inference_mode():
            ids = model.generate(
                input_ids=inputs["input_ids"],
                pixel_values=inputs["pixel_values"],
                max_new_tokens=length,
                min_new_tokens=length,
                num_beams=beams,
                do_sample=False,
            )
        text = processor.batch_decode(ids, skip_special_tokens=False)[0]
        processor.post_process_generation(text, task=task, image_size=image.size)

    one(images[0], "<CAPTION>", 4, 1)
    for length in lengths:
        for beams in beams_list:
            if rec.left() < 30:
                rec.add(stage="naive", skipped=f"tokens={length} beams={beams}: out of time")
                continue
            task = TASK_FOR_LENGTH[length]
            one(images[0], task, length, beams)  # unmeasured: first use of these shapes
            latencies: list[float] = []
            with peak_window():
                started = time.perf_counter()
                while len(latencies) < 2 or (time.perf_counter() - started < cap_s and len(latencies) < 20):
                    t0 = time.perf_counter()
                    one(images[len(latencies) % len(images)], task, length, beams)
                    sync()
                    latencies.append(time.perf_counter() - t0)
                wall = time.perf_counter() - started
            ips = len(latencies) / wall
            found[(length, beams)] = ips
            rec.add(
                stage="naive", dtype="float32", tokens=length, beams=beams, concurrency=1,
                requests=len(latencies), images_per_s=round(ips, 2), **stats_ms(latencies), peak_gib=peak_gib(),
            )  # fmt: skip
    return found


# -- server path -------------------------------------------------------------------------------------------
def make_manager(ckpt: Path, **overrides: Any) -> Any:
    from app.core.config import Settings
    from app.models.manager import ModelManager

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_id=str(ckpt),
        device=DEVICE,
        num_beams=1,
        max_new_tokens=1024,
        warmup=True,
        max_batch_size=overrides.pop("max_batch_size", 64),
        batch_wait_ms=overrides.pop("batch_wait_ms", 5),
        max_queue_size=4096,
        **overrides,
    )
    manager = ModelManager(settings)
    started = time.perf_counter()
    manager.get()
    return manager, time.perf_counter() - started


CLIENTS = "async"  # "async": asyncio tasks awaiting analyze_async (how the API and chat call it); "threads"


def run_clients(manager: Any, length: int, beams: int, concurrency: int, cap_s: float, min_requests: int) -> dict:
    from app.core.tasks import get_task
    from app.models.florence import GenerationOptions, TaskRequest

    images = sample_images()
    spec = get_task(TASK_FOR_LENGTH[length])
    requests = [TaskRequest.create(image, spec) for image in images]
    options = GenerationOptions(num_beams=beams, max_new_tokens=length, min_new_tokens=length)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    started = time.perf_counter()

    def client() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= min_requests and time.perf_counter() - started > cap_s:
                    return
                index = issued
                issued += 1
            t0 = time.perf_counter()
            try:
                manager.run([requests[index % len(requests)]], options)
            except Exception as exc:  # noqa: BLE001 - a benchmark records failures and goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                latencies.append(time.perf_counter() - t0)

    async def async_client() -> None:
        nonlocal issued
        while True:
            if issued >= min_requests and time.perf_counter() - started > cap_s:
                return
            index = issued
            issued += 1
            t0 = time.perf_counter()
            try:
                await manager.run_async([requests[index % len(requests)]], options)
            except Exception as exc:  # noqa: BLE001 - a benchmark records failures and goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.perf_counter() - t0)

    async def run_async_clients() -> None:
        await asyncio.gather(*(async_client() for _ in range(concurrency)))

    before = batching_counts(manager)
    with peak_window():
        if CLIENTS == "async":
            asyncio.run(run_async_clients())
        else:
            threads = [threading.Thread(target=client) for _ in range(concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        wall = time.perf_counter() - started
    after = batching_counts(manager)
    batches, served = after[0] - before[0], after[1] - before[1]
    row: dict[str, Any] = {
        "requests": len(latencies),
        "images_per_s": round(len(latencies) / wall, 2),
        **(stats_ms(latencies) if latencies else {}),
        "peak_gib": peak_gib(),
        "mean_batch": round(served / batches, 1) if batches else None,
        "clients": CLIENTS,
    }
    if errors:
        row["errors"] = errors[:3]
    return row


def run_server(
    rec: Recorder, manager: Any, variant: str, lengths: list[int], beams_list: list[int], conc: list[int], cap_s: float
) -> None:
    for length in lengths:
        for beams in beams_list:
            for concurrency in conc:
                if rec.left() < 25:
                    rec.add(stage="server", variant=variant, skipped=f"{length}/{beams}/{concurrency}: out of time")
                    continue
                # One unmeasured round first: new shapes pay one-time costs (allocator growth, kernel choice).
                run_clients(manager, length, beams, concurrency, cap_s=0, min_requests=concurrency)
                row = run_clients(manager, length, beams, concurrency, cap_s, min_requests=max(concurrency, 3))
                rec.add(stage="server", variant=variant, tokens=length, beams=beams, concurrency=concurrency, **row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="large", choices=["large", "base", "tiny"])
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--stages", default="ceilings,server20,naive,server,oom")
    parser.add_argument("--budget-s", type=float, default=540)
    parser.add_argument("--cap-s", type=float, default=8, help="seconds of load per measured configuration")
    parser.add_argument("--lengths", default="20,100,300")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--clients", default="async", choices=["async", "threads"])
    parser.add_argument("--batch-wait-ms", type=float, default=5)
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args()
    global CLIENTS
    CLIENTS = args.clients

    rec = Recorder(args.out, time.monotonic() + args.budget_s)
    stages = args.stages.split(",")
    lengths = [int(x) for x in args.lengths.split(",")]
    conc = [int(x) for x in args.concurrency.split(",")]
    rec.add(stage="machine", size=args.size, **machine_info())

    from bench.checkpoints import build_checkpoint

    ckpt = args.ckpt or Path(f"/tmp/florence-2-{args.size}-random")
    started = time.perf_counter()
    if args.size == "tiny":  # a smoke test of this script on a laptop
        from tests.tiny_models import build_tiny_florence

        if not (ckpt / "config.json").exists():
            build_tiny_florence(ckpt)
    else:
        build_checkpoint(args.size, ckpt, device=DEVICE)
    rec.add(stage="checkpoint", path=str(ckpt), seconds=round(time.perf_counter() - started, 1))

    batching = {"max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms}
    manager, load_s = make_manager(ckpt, **batching)
    backend = manager.get()
    rec.add(stage="server_load", seconds=round(load_s, 1), dtype=backend.dtype_name, device=backend.device)
    if "ceilings" in stages and torch.cuda.is_available():
        from bench.gpu_stages import measure_ceilings

        measure_ceilings(rec, backend._model, backend._processor)
    if "server20" in stages:
        run_server(rec, manager, "eager", [20], [1], conc, args.cap_s)
    naive: dict = {}
    if "naive" in stages:
        naive = run_naive(rec, ckpt, lengths, [3, 1], args.cap_s)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the float32 model is gone with run_naive's frame
    if "server" in stages:
        run_server(rec, manager, "eager", [20], [3], conc, args.cap_s)
        run_server(rec, manager, "eager", [x for x in lengths if x != 20], [1, 3], conc, args.cap_s)
    if "oom" in stages and torch.cuda.is_available():
        from bench.gpu_stages import run_oom

        run_oom(rec, manager)
    manager.shutdown()
    if "static_cache" in stages:
        variant = "static_cache"
        del manager
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        manager, load_s = make_manager(ckpt, **batching)
        # A pre-allocated KV cache through transformers' generation config (compilation kept off).
        generation_config = manager.get()._model.generation_config
        generation_config.cache_implementation = "static"
        generation_config.disable_compile = True
        rec.add(stage="variant_load", variant=variant, seconds=round(load_s, 1))
        for concurrency in conc:
            if rec.left() < 40:
                rec.add(stage="variant", variant=variant, skipped=f"concurrency {concurrency}: out of time")
                continue
            run_server(rec, manager, variant, [20], [1], [concurrency], args.cap_s)
        manager.shutdown()
    print_table(rec.rows, naive)


def print_table(rows: list[dict[str, Any]], naive: dict) -> None:
    print("\nvariant      tokens beams conc  images/s   p50 ms   p95 ms  peak GiB  batch  x naive")
    for row in rows:
        if row.get("stage") not in ("server", "naive") or "images_per_s" not in row:
            continue
        base = naive.get((row["tokens"], row["beams"]))
        ratio = f"{row['images_per_s'] / base:7.1f}" if base and row["stage"] == "server" else "      -"
        name = row.get("variant", "naive fp32") if row["stage"] == "server" else "naive fp32"
        print(
            f"{name:12s} {row['tokens']:6d} {row['beams']:5d} {row['concurrency']:4d} {row['images_per_s']:9.2f} "
            f"{row.get('p50_ms', 0):8.1f} {row.get('p95_ms', 0):8.1f} {row.get('peak_gib') or 0:9.2f} "
            f"{row.get('mean_batch') or 1:6} {ratio}"
        )


if __name__ == "__main__":
    main()
