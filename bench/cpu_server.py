"""CPU, end to end through the server's model path: what a user waits for, per CPU_OPTIMIZATION setting.

Full-size Florence-2 with random weights (`bench/checkpoints.py`, saved once to --checkpoint) loaded by
`ModelManager` exactly as the server loads a real checkpoint, on CPU. Every request is forced to 20
new tokens (min = max) and timed through `ModelManager.analyze` (resize, batching, model, parsing):

- new image: a 20-token caption on an image the server has not seen (4 photos in turn, cache cleared);
- same image, next task: `<OD>`, `<OCR>`, `<DENSE_REGION_CAPTION>` right after on the last photo,
  which reuse its encoded features when IMAGE_FEATURE_CACHE > 0 (the chat's "Analyze everything"
  and "caption, then objects, then text" are this case);
- same image, 100 tokens: `<OD>` forced to 100 tokens (a detection's usual length), where the
  decoder's per-token cost shows.

    python -m bench.cpu_server --size large --variants none,int8 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.core.config import Settings
from app.core.tasks import get_task
from app.models.florence import GenerationOptions, TaskRequest
from app.models.manager import ModelManager
from bench.measure import ROOT

TOKENS = 20
NEXT_TASKS = ("<OD>", "<OCR>", "<DENSE_REGION_CAPTION>")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large", choices=["large", "base"])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: /tmp/florence-2-SIZE-random")
    parser.add_argument("--variants", default="none,int8", help="CPU_OPTIMIZATION values to compare")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (new image, next tasks) per variant")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from bench.checkpoints import build_checkpoint
    from bench.measure import machine_info, sample_images

    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = build_checkpoint(args.size, args.checkpoint or Path(f"/tmp/florence-2-{args.size}-random"))
    images = sample_images()
    options = GenerationOptions(num_beams=1, max_new_tokens=TOKENS, min_new_tokens=TOKENS)
    long_options = GenerationOptions(num_beams=1, max_new_tokens=100, min_new_tokens=100)
    print(json.dumps({"stage": "machine", **machine_info()}), flush=True)

    for variant in args.variants.split(","):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            model_id=str(ckpt),
            device="cpu",
            num_beams=1,
            warmup=True,
            cpu_optimization=variant,
        )
        manager = ModelManager(settings)
        started = time.perf_counter()
        backend = manager.get()
        load_s = time.perf_counter() - started

        def timed(image: Any, task: str, opts: GenerationOptions = options, m: ModelManager = manager) -> float:
            t0 = time.perf_counter()
            m.analyze([TaskRequest.create(image, get_task(task))], opts)
            return time.perf_counter() - t0

        timed(images[0], "<CAPTION>")  # the first full-size call pays one-off allocations
        new_image: list[float] = []
        next_task: list[float] = []
        long_task: list[float] = []
        for round_index in range(args.repeat):
            for image in images:
                if backend._features is not None:
                    backend._features.clear()
                new_image.append(timed(image, "<CAPTION>"))
            last = images[round_index % len(images)]
            timed(last, "<CAPTION>")
            next_task.extend(timed(last, task) for task in NEXT_TASKS)
            long_task.append(timed(last, "<OD>", long_options))
        row = {
            "stage": "cpu_server",
            "size": args.size,
            "cpu_optimization": variant,
            "image_feature_cache": settings.image_feature_cache,
            "load_s": round(load_s, 1),
            "new_image_caption_s": [round(t, 2) for t in new_image],
            "new_image_median_s": round(statistics.median(new_image), 2),
            "same_image_next_task_s": [round(t, 2) for t in next_task],
            "same_image_median_s": round(statistics.median(next_task), 2),
            "same_image_od_100_tokens_s": [round(t, 2) for t in long_task],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        with (args.out / "cpu_server.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        manager.shutdown()


if __name__ == "__main__":
    main()
