"""CPU path: float32 against dynamic int8 (CPU_OPTIMIZATION=int8) on full-size Florence-2 (random weights).

For each variant: time of the vision encoder on one 768x768 image and of a 20-token greedy caption
(min_new_tokens = max_new_tokens = 20), and numeric agreement with float32 on the same inputs.
Teacher-forced: each variant decodes float32's own greedy caption step by step (its token forced at
every step, the KV cache used exactly as in generation, because dynamic int8 quantises each step's
activations on their own), and we compare the logits it produced at each step with float32's: the
share of steps whose top-1 token is the same, and ||int8 - fp32|| / ||fp32||. Free-running: the two
greedy captions compared position by position. With random weights the logits are far flatter than a
trained model's (see `logit_margin_fp32`), so one flipped step derails a free-running caption; treat
these as a weak signal and check real weights before relying on int8 for OCR or boxes.

    python -m bench.cpu_bench --size large --out bench/results
    python -m bench.cpu_bench --gemm-only   # this CPU's matrix-product rates, float32 and int8 kernels
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from app.core.tasks import get_task
from app.models.acceleration import quantize_int8
from app.models.base import TaskRequest
from app.models.florence_inputs import InputBuilder
from bench.measure import ROOT


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large", choices=["large", "base"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--variants", default="fp32,int8_vision,int8")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--gemm-only", action="store_true", help="only the matrix-product rates")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out = (args.out / f"cpu_{args.size}.jsonl").open("a")

    def record(**row: Any) -> None:
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row), flush=True)

    for tokens, d_in, d_out in ((2304, 1024, 4096), (1, 1024, 4096), (1, 1024, 51328)):
        record(stage="gemm", **gemm_rates(tokens, d_in, d_out))
    if args.gemm_only:
        return

    from bench.checkpoints import build_model, build_processor, count_parameters
    from bench.measure import machine_info, sample_images

    record(stage="machine", threads=torch.get_num_threads(), **machine_info())
    started = time.perf_counter()
    processor = build_processor(Path(f"/tmp/florence-2-{args.size}-processor"))
    reference = build_model(args.size, processor)
    record(stage="build", seconds=round(time.perf_counter() - started, 1), params=count_parameters(reference))

    builder = InputBuilder(processor)
    request = TaskRequest.create(sample_images()[0], get_task("<CAPTION>"))
    inputs = builder.collate([builder.prepare(request)], "cpu", torch.float32)

    def caption(model: Any) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=20, min_new_tokens=20, num_beams=1, do_sample=False)

    def teacher_forced_logits(model: Any, sequence: torch.Tensor) -> torch.Tensor:
        """The logits `model` computes at each generation step while `sequence` is forced: (steps, vocab)."""
        forced = ForceAndRecord(sequence[0, 1:].tolist())
        with torch.inference_mode():
            model.generate(
                **inputs,
                max_new_tokens=forced.steps,
                min_new_tokens=forced.steps,
                num_beams=1,
                do_sample=False,
                logits_processor=LogitsProcessorList([forced]),
            )
        return torch.cat(forced.seen)

    # All variants stay loaded and are timed in turns, so load from other processes on this shared
    # machine hits them alike; the first call of each is a warm-up and is not counted.
    models: dict[str, Any] = {}
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        if variant == "fp32":
            models[variant] = reference
        else:
            models[variant] = quantize_int8(copy.deepcopy(reference), "all" if variant == "int8" else "vision")
        record(stage="prepare", variant=variant, quantize_s=round(time.perf_counter() - t0, 1))
    tokens: dict[str, torch.Tensor] = {}
    for variant, model in models.items():
        tokens[variant] = caption(model)
    encoder: dict[str, list[float]] = {v: [] for v in models}
    captions: dict[str, list[float]] = {v: [] for v in models}
    for _ in range(args.repeat):
        for variant, model in models.items():
            with torch.inference_mode():
                encoder[variant].append(
                    timed(lambda m=model: m.model.get_image_features(pixel_values=inputs["pixel_values"]))
                )
            captions[variant].append(timed(lambda m=model: caption(m)))
    reference_tokens = tokens["fp32"]
    reference_logits = teacher_forced_logits(reference, reference_tokens)
    for variant, model in models.items():
        row: dict[str, Any] = {
            "stage": "variant",
            "variant": variant,
            "vision_encoder_s": [round(t, 2) for t in encoder[variant]],
            "caption_20_s": [round(t, 2) for t in captions[variant]],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        if variant != "fp32":
            logits = teacher_forced_logits(model, reference_tokens)
            # Generation's own processors set some logits to -inf (forced first token, minimum length).
            finite = torch.isfinite(logits) & torch.isfinite(reference_logits)
            difference = (logits - reference_logits)[finite]
            row.update(
                teacher_forced_top1_agreement=round(
                    (logits.argmax(-1) == reference_logits.argmax(-1)).float().mean().item(), 3
                ),
                logits_relative_error=round((difference.norm() / reference_logits[finite].norm()).item(), 4),
                free_running_token_agreement=round((tokens[variant] == reference_tokens).float().mean().item(), 3),
                logit_margin_fp32=round(_mean_top2_margin(reference_logits), 3),
            )
        record(**row)
    out.close()


def gemm_rates(tokens: int, d_in: int, d_out: int) -> dict[str, Any]:
    """One Linear layer's speed (median of 7) in float32 and in dynamic int8 with each kernel family.

    2304 tokens x 1024 -> 4096 is the image encoder's main stage (a 48x48 grid, FFN); one token is a
    decoder step (FFN, then the output layer over the vocabulary).
    """
    from torch.ao.quantization import quantize_dynamic

    x = torch.randn(tokens, d_in)
    row: dict[str, Any] = {"shape": f"{tokens}x{d_in}->{d_out}"}
    with torch.inference_mode():
        layers = {"float32": torch.nn.Sequential(torch.nn.Linear(d_in, d_out))}
        before = torch.backends.quantized.engine
        for engine in ("x86", "onednn"):
            torch.backends.quantized.engine = engine
            layers[f"int8_{engine}"] = quantize_dynamic(
                torch.nn.Sequential(torch.nn.Linear(d_in, d_out)), {torch.nn.Linear}, dtype=torch.qint8
            )
        torch.backends.quantized.engine = before
        for name, layer in layers.items():
            layer(x)
            samples = sorted(timed(lambda m=layer: m(x)) for _ in range(7))
            seconds = samples[len(samples) // 2]
            row[f"{name}_ms"] = round(seconds * 1000, 3)
            row[f"{name}_gflops"] = round(2 * tokens * d_in * d_out / seconds / 1e9, 1)
    return row


def _mean_top2_margin(logits: torch.Tensor) -> float:
    """How decisive the reference is: mean gap between the top-2 logits (trained models: several units)."""
    top2 = logits.topk(2, dim=-1).values
    gaps = top2[..., 0] - top2[..., 1]
    return gaps[torch.isfinite(gaps)].mean().item()


class ForceAndRecord(LogitsProcessor):
    """Keeps the logits of each step, then forces the next token of a given sequence."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.steps = len(tokens)
        self.seen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.seen.append(scores.float().clone())
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[len(self.seen) - 1]] = 0
        return forced


if __name__ == "__main__":
    main()
