"""What per-box confidence scores cost: `compute_transition_scores` against one teacher-forced pass.

One `<OD>` request on one 768x768 image, generating exactly `--tokens` tokens (min = max new tokens)
with `--beams` beams, on a full-size Florence-2 with random weights (speed does not depend on the
weights' values; bench/checkpoints.py). The image encoder runs once up front and every variant
decodes from the same `encoder_outputs`, so the figures isolate decoding; the encoder's time is
printed too, as the rest of a real request.

- `plain`: `generate` as without scores.
- `transition`: `generate(return_dict_in_generate=True, output_scores=True)` keeps each step's
  (beams x vocabulary) scores; `compute_transition_scores(..., normalize_logits=True)` picks the
  chosen beam's token at each step; `.exp()` gives probabilities. (What the app does.)
- `teacher_forced`: plain `generate`, then one decoder forward over the finished sequence with the
  same encoder outputs, `log_softmax`, and a gather of each generated token.

Variants run interleaved (one of each per round, the first round a warm-up) and the minimum of
each is kept. On a machine shared with other work, `--threads 1 --cpu-time` times this process's
CPU seconds instead of the wall clock, which other processes disturb far less.

    python -m bench.score_cost --size base --tokens 100 --beams 3 --repeat 3
    python -m bench.score_cost --size base --threads 1 --cpu-time --repeat 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutput

from bench.checkpoints import build_model, build_processor
from bench.measure import machine_info, sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="base", choices=["base", "large"])
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time with this process's CPU time (steadier on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        processor = build_processor(Path(folder))
    model = build_model(args.size, processor).eval()
    inputs = processor(text="<OD>", images=sample_images()[0], return_tensors="pt")
    encode = lambda: model.get_encoder()(  # noqa: E731
        inputs_embeds=merged_embeddings(model, inputs), attention_mask=inputs["attention_mask"]
    )
    encoded = encode().last_hidden_state
    common: dict[str, Any] = {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "max_new_tokens": args.tokens,
        "min_new_tokens": args.tokens,
        "num_beams": args.beams,
        "do_sample": False,
        "early_stopping": False,
        "no_repeat_ngram_size": 0,
    }

    def encoder_outputs() -> BaseModelOutput:
        # A new wrapper per call: beam search expands `encoder_outputs` to its beams in place.
        return BaseModelOutput(last_hidden_state=encoded)

    def plain() -> Any:
        return model.generate(**common, encoder_outputs=encoder_outputs())

    def transition() -> list[float]:
        out = model.generate(
            **common, encoder_outputs=encoder_outputs(), return_dict_in_generate=True, output_scores=True
        )
        beams = getattr(out, "beam_indices", None)
        scores = model.compute_transition_scores(out.sequences, out.scores, beams, normalize_logits=True)
        return scores.exp()[0].tolist()  # type: ignore[no-any-return]

    def teacher_forced() -> list[float]:
        sequences = model.generate(**common, encoder_outputs=encoder_outputs())
        logits = model(
            encoder_outputs=encoder_outputs(),
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=sequences[:, :-1],
        ).logits
        chosen = logits.float().log_softmax(-1).gather(-1, sequences[:, 1:, None])[..., 0]
        return chosen.exp()[0].tolist()  # type: ignore[no-any-return]

    report: dict[str, Any] = {
        "machine": machine_info(),
        "size": args.size,
        "tokens": args.tokens,
        "beams": args.beams,
        "threads": torch.get_num_threads(),
        "clock": "process CPU time" if args.cpu_time else "wall",
    }
    clock = time.process_time if args.cpu_time else time.perf_counter
    report["encoder_ms"] = round(1000 * min(measure(clock, encode) for _ in range(2)), 1)
    variants = {"plain": plain, "transition": transition, "teacher_forced": teacher_forced}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.repeat + 1):  # interleaved, so load changes hit every variant alike
        for name, fn in variants.items():
            seconds = measure(clock, fn)
            if round_index:  # the first round warms up
                times[name].append(seconds)
    for name, values in times.items():
        report[name] = {"min_ms": round(1000 * min(values), 1), "runs_ms": [round(1000 * v, 1) for v in values]}
    # The extra work alone, on one finished generation: picking the transition scores out of the kept
    # per-step scores, and the teacher-forced decoder pass.
    kept = model.generate(**common, encoder_outputs=encoder_outputs(), return_dict_in_generate=True, output_scores=True)
    beam_indices = getattr(kept, "beam_indices", None)
    best = kept.sequences

    def pick() -> Any:
        return model.compute_transition_scores(best, kept.scores, beam_indices, normalize_logits=True)

    def forced() -> Any:
        outputs = model(
            encoder_outputs=encoder_outputs(), attention_mask=inputs["attention_mask"], decoder_input_ids=best[:, :-1]
        )
        return outputs.logits.float().log_softmax(-1).gather(-1, best[:, 1:, None])

    report["alone_ms"] = {
        "compute_transition_scores": round(1000 * min(measure(clock, pick) for _ in range(3)), 1),
        "teacher_forced_pass": round(1000 * min(measure(clock, forced) for _ in range(3)), 1),
    }
    request_ms = report["encoder_ms"] + report["plain"]["min_ms"]
    for name in ("transition", "teacher_forced"):
        extra = report[name]["min_ms"] - report["plain"]["min_ms"]
        report[name]["extra_ms"] = round(extra, 1)
        report[name]["extra_of_request_pct"] = round(100 * extra / request_ms, 1)
    print(json.dumps(report, indent=2))


def measure(clock: Any, fn: Any) -> float:
    started = clock()
    fn()
    return float(clock() - started)


def merged_embeddings(model: Any, inputs: Any) -> torch.Tensor:
    """The encoder's input as `generate` builds it: token embeddings with the image features scattered in."""
    features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    mask = model.get_placeholder_mask(inputs["input_ids"], inputs_embeds=embeds, image_features=features)
    return embeds.masked_scatter(mask, features.to(embeds.dtype))


if __name__ == "__main__":
    main()
