"""CUDA-only stages of the serving benchmark: what the hardware allows, and a real out-of-memory."""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from bench.measure import Recorder, batching_counts, peak_gib, peak_window, sample_images, timed


def measure_ceilings(rec: Recorder, model: Any, processor: Any) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    device = "cuda"
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t = min(timed(lambda a=a, b=b: a @ b, repeat=10, warmup=3))
    matmul_tflops = 2 * n**3 / t / 1e12
    src = torch.randn(2**30 // 2, device=device, dtype=torch.bfloat16)  # 1 GiB
    dst = torch.empty_like(src)
    t = min(timed(lambda s=src, d=dst: d.copy_(s), repeat=10, warmup=2))
    bandwidth = 2 * src.numel() * 2 / t / 1e12
    del a, b, src, dst
    torch.cuda.empty_cache()

    dtype = next(model.parameters()).dtype
    pixels = torch.randn(1, 3, 768, 768, device=device, dtype=dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.model.get_image_features(pixel_values=pixels)
    vision_flops = counter.get_total_flops()
    inputs = processor(images=[sample_images()[0]], text=["<CAPTION>"], return_tensors="pt").to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.generate(**inputs, max_new_tokens=1, num_beams=1, do_sample=False)
    encode_flops = counter.get_total_flops()  # vision + text encoder + one decoder step
    decoder = model.model.language_model.decoder
    # Per step the decoder reads its layer weights and the whole LM head (tied to the token embedding,
    # of which a step reads only one row per sequence), so the embedding tables are left out here.
    skip = {id(decoder.embed_tokens.weight), id(decoder.embed_positions.weight)}
    decoder_bytes = sum(p.numel() * p.element_size() for p in decoder.parameters() if id(p) not in skip)
    lm_head_bytes = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    rec.add(
        stage="ceilings",
        matmul_bf16_tflops=round(matmul_tflops, 1),
        copy_tb_s=round(bandwidth, 2),
        vision_gflops_per_image=round(vision_flops / 1e9, 1),
        encode_gflops_per_image=round(encode_flops / 1e9, 1),
        decoder_weight_mb_per_step=round((decoder_bytes + lm_head_bytes) / 1e6, 1),
        vision_floor_ms=round(vision_flops / (matmul_tflops * 1e12) * 1000, 2),
        encode_floor_ms=round(encode_flops / (matmul_tflops * 1e12) * 1000, 2),
        decoder_step_floor_ms=round((decoder_bytes + lm_head_bytes) / (bandwidth * 1e12) * 1000, 3),
    )
    for batch in (1, 8, 64):
        pixels = torch.randn(batch, 3, 768, 768, device=device, dtype=dtype)
        with torch.inference_mode(), peak_window():
            times = timed(lambda p=pixels: model.model.get_image_features(pixel_values=p), repeat=3)
        best = min(times)
        rec.add(
            stage="vision_encoder",
            batch=batch,
            ms=round(best * 1000, 1),
            ms_per_image=round(best * 1000 / batch, 2),
            achieved_tflops=round(vision_flops * batch / best / 1e12, 1),
            peak_gib=peak_gib(),
        )
        del pixels


def run_oom(rec: Recorder, manager: Any) -> None:
    """Cap this process's GPU memory so a big batch really runs out, then check every request is served."""
    from app.core.tasks import get_task
    from app.models.florence import GenerationOptions, TaskRequest

    splits_before = batching_counts(manager)[2]
    allocated = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (allocated + 6 * 2**30) / total))
    images = sample_images()
    spec = get_task("<OCR_WITH_REGION>")
    options = GenerationOptions(num_beams=3, max_new_tokens=300, min_new_tokens=300)
    results: list[Any] = [None] * 48
    errors: list[str] = []

    def call(i: int) -> None:
        try:
            results[i] = manager.run([TaskRequest.create(images[i % 4], spec)], options)[0]
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")

    started = time.perf_counter()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    # A request that cannot fit even alone (memory capped just above the weights) fails with a clear
    # error, and once memory is back the next request is served.
    splits_mid = batching_counts(manager)[2]
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 48 * 2**20) / total)
    single_error = None
    try:
        manager.run([TaskRequest.create(images[0], spec)], options)
    except Exception as exc:  # noqa: BLE001
        single_error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
    torch.cuda.set_per_process_memory_fraction(1.0)
    after = manager.run([TaskRequest.create(images[1], get_task("<CAPTION>"))])
    rec.add(
        stage="oom",
        memory_cap_gib=round((allocated + 6 * 2**30) / 2**30, 1),
        served=sum(r is not None for r in results),
        of=len(results),
        errors=errors[:3],
        split_retries=splits_mid - splits_before,
        seconds=round(wall, 1),
        too_big_alone=single_error,
        served_after=type(after[0]).__name__,
    )
