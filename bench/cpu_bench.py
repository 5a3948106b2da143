"""CPU path: float32 against dynamic int8 (CPU_OPTIMIZATION=int8) on full-size Florence-2 (random weights).

For each variant: time of the vision encoder on one 768x768 image and of a 20-token greedy caption
(min_new_tokens = max_new_tokens = 20), and numeric agreement with float32 on the same inputs:
teacher-forced over float32's own greedy caption, the share of positions where the top-1 token is
the same and the relative error of the logits, ||int8 - fp32|| / ||fp32||. With random weights the
logits are far flatter than a trained model's, so top-1 agreement here is a pessimistic, weak signal.

    python bench/cpu_bench.py --size large --out bench/results
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from app.models.acceleration import quantize_int8  # noqa: E402
from app.models.florence import FlorenceRequest  # noqa: E402
from app.models.florence_inputs import InputBuilder  # noqa: E402
from app.tasks import get_task  # noqa: E402


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
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out = (args.out / f"cpu_{args.size}.jsonl").open("a")

    def record(**row: Any) -> None:
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row), flush=True)

    from checkpoints import build_model, build_processor, count_parameters
    from serving_bench import machine_info, sample_images

    record(stage="machine", threads=torch.get_num_threads(), **machine_info())
    started = time.perf_counter()
    processor = build_processor(Path(f"/tmp/florence-2-{args.size}-processor"))
    reference = build_model(args.size, processor)
    record(stage="build", seconds=round(time.perf_counter() - started, 1), params=count_parameters(reference))

    builder = InputBuilder(processor)
    request = FlorenceRequest.create(sample_images()[0], get_task("<CAPTION>"))
    inputs = builder.collate([builder.prepare(request)], "cpu", torch.float32)

    def caption(model: Any) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(**inputs, max_new_tokens=20, min_new_tokens=20, num_beams=1, do_sample=False)

    def teacher_forced_logits(model: Any, sequence: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(**inputs, decoder_input_ids=sequence[:, :-1]).logits.float()

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
            row.update(
                teacher_forced_top1_agreement=round(
                    (logits.argmax(-1) == reference_logits.argmax(-1)).float().mean().item(), 3
                ),
                logits_relative_error=round(((logits - reference_logits).norm() / reference_logits.norm()).item(), 4),
                free_running_token_agreement=round((tokens[variant] == reference_tokens).float().mean().item(), 3),
                logit_margin_fp32=round(_mean_top2_margin(reference_logits), 3),
            )
        record(**row)
    out.close()


def _mean_top2_margin(logits: torch.Tensor) -> float:
    """How decisive the reference is: mean gap between the top-2 logits (trained models: several units)."""
    top2 = logits.topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).mean().item()


if __name__ == "__main__":
    main()
