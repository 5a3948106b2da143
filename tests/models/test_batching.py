"""Dynamic batching around the real tiny Florence-2 backend.

The model's `generate` is wrapped so each row of a batch writes a scripted answer chosen by *that
row's own pixels* (a logits processor that allows one token per step): every caller must get back
the answer for its own image, through the real padding, decoding and parsing path. Batch sizes are
read from a spy around `FlorenceBackend.generate_texts`; arrival order is controlled with events,
never with sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from app.core.config import Settings
from app.core.errors import AppError, Busy
from app.core.results import DetectionResult, TextResult
from app.core.tasks import get_task
from app.models.batching import DynamicBatcher, OutOfDeviceMemory
from app.models.florence import FlorenceBackend, GenerationOptions, TaskRequest
from app.models.florence_inputs import InputBuilder, PreparedInput
from app.models.manager import ModelManager

NAMES = ("sky", "dog", "tree", "car")
WAIT = 10  # seconds a test waits for an event before failing (never reached when things work)


class ScriptedRows(LogitsProcessor):
    """Forces row i of the batch to emit `scripts[i]`, then end-of-sequence."""

    def __init__(self, scripts: list[list[int]], eos_id: int) -> None:
        self.scripts = scripts
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - 1  # the decoder starts from one start token
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[step] if step < len(script) else self.eos_id] = 0
        return forced


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(x) for x in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket())]


@pytest.fixture(scope="module")
def batch_settings(tiny_settings: Settings) -> Settings:
    # The scripted answers read each row's pixels, which `generate` only sees with the image-feature
    # cache off (with it on, `generate` gets encoder outputs); tests/models/test_image_features.py covers the cache.
    return tiny_settings.model_copy(update={"image_feature_cache": 0})


@pytest.fixture(scope="module")
def backend(batch_settings: Settings) -> Iterator[FlorenceBackend]:
    manager = ModelManager(batch_settings)
    loaded: FlorenceBackend = manager.get()
    yield loaded
    manager.shutdown()


@pytest.fixture()
def scripted(backend: FlorenceBackend, images: list[Image.Image], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make the real model answer `<name><loc_100><loc_200><loc_300><loc_400>` for each image's name.

    Set `state["oom_above"] = n` to make `generate` raise CUDA's out-of-memory error for batches of more
    than n rows (0: every batch), as a GPU does when a batch does not fit.
    """
    from transformers import Florence2ForConditionalGeneration

    tokenizer = backend._processor.tokenizer
    means = [
        float(backend.preprocess([TaskRequest.create(image, get_task("<CAPTION>"))])["pixel_values"].mean())
        for image in images
    ]
    original = Florence2ForConditionalGeneration.generate
    state: dict[str, Any] = {"oom_above": None}

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        pixel_values = kwargs["pixel_values"]
        limit = state["oom_above"]
        if limit is not None and pixel_values.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        scripts = []
        for row_mean in pixel_values.float().mean(dim=(1, 2, 3)).tolist():
            name = NAMES[min(range(len(means)), key=lambda i: abs(means[i] - row_mean))]
            text = f"{name}<loc_100><loc_200><loc_300><loc_400>"
            scripts.append([tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)])
        kwargs["logits_processor"] = LogitsProcessorList([ScriptedRows(scripts, tokenizer.eos_token_id)])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Florence2ForConditionalGeneration, "generate", generate)
    return state


class Spy:
    """Records what each model call received; can hold the first call until released."""

    def __init__(self, backend: FlorenceBackend, hold_first: bool = False) -> None:
        self.backend = backend
        self.sizes: list[int] = []
        self.keys: list[GenerationOptions] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, prepared: Sequence[PreparedInput], key: GenerationOptions) -> list[str]:
        self.sizes.append(len(prepared))
        self.keys.append(key)
        self.entered.set()
        assert self.release.wait(WAIT)
        return self.backend.generate_texts(prepared, key)


def make_batcher(spy: Callable[..., list[str]], **kwargs: Any) -> DynamicBatcher[PreparedInput, GenerationOptions, str]:
    options: dict[str, Any] = {"max_batch_size": 8, "batch_wait_s": 0.0, "max_queue_size": 64, **kwargs}
    return DynamicBatcher(spy, **options)


def caption(backend: FlorenceBackend, image: Image.Image) -> PreparedInput:
    return backend.prepare(TaskRequest.create(image, get_task("<CAPTION>")))


GREEDY = GenerationOptions(num_beams=1, max_new_tokens=24)


# -- inputs ----------------------------------------------------------------------------------------------
def test_batched_inputs_equal_the_processors(backend: FlorenceBackend, images: list[Image.Image]) -> None:
    requests = [
        TaskRequest.create(images[0], get_task("<CAPTION>")),
        TaskRequest.create(images[1], get_task("<CAPTION_TO_PHRASE_GROUNDING>"), text="a cat on a red car"),
        TaskRequest.create(images[2], get_task("<REGION_TO_DESCRIPTION>"), region=[10, 20, 200, 220]),
    ]
    processor = backend._processor
    expected = processor(
        images=[r.image for r in requests], text=[r.prompt() for r in requests], return_tensors="pt", padding=True
    )
    builder = InputBuilder(processor)
    assert builder.fast
    built = builder.collate([builder.prepare(r) for r in requests], "cpu", torch.float32)
    assert torch.equal(built["input_ids"], expected["input_ids"])
    assert torch.equal(built["attention_mask"], expected["attention_mask"])
    assert torch.equal(built["pixel_values"], expected["pixel_values"])
    assert built["attention_mask"].sum(dim=1).unique().numel() == 3  # three prompt lengths, padded


# -- each caller gets its own result ------------------------------------------------------------------------
def test_one_call_with_mixed_tasks_is_one_batch_and_results_stay_in_order(
    scripted: dict[str, Any], batch_settings: Settings, images: list[Image.Image]
) -> None:
    requests = [
        TaskRequest.create(images[0], get_task("<OD>")),
        TaskRequest.create(images[1], get_task("<CAPTION>")),
        TaskRequest.create(images[2], get_task("<REGION_TO_DESCRIPTION>"), region=[5, 5, 60, 60]),
        TaskRequest.create(images[3], get_task("<DENSE_REGION_CAPTION>")),
    ]
    manager = ModelManager(batch_settings.model_copy(update={"max_batch_size": 4, "batch_wait_ms": 60_000}))
    backend: FlorenceBackend = manager.get()
    spy = Spy(backend)
    manager._batchers["florence2"] = make_batcher(spy, max_batch_size=4, batch_wait_s=60)
    try:
        results = manager.run(requests)
    finally:
        manager.shutdown()
    assert spy.sizes == [4]  # full at once: no waiting for the 60 s window
    assert [type(r) for r in results] == [DetectionResult, TextResult, TextResult, DetectionResult]
    assert [r.task for r in results] == [r.spec.token for r in requests]
    assert results[0] == DetectionResult(
        "<OD>", (512, 512), xyxy=((51.0, 102.0, 153.0, 205.0),), labels=("sky",), scores=(1.0,)
    )
    assert results[1] == TextResult("<CAPTION>", images[1].size, text="dog")
    assert results[2] == TextResult(
        "<REGION_TO_DESCRIPTION>", images[2].size, region=(5.0, 5.0, 60.0, 60.0), text="tree"
    )
    assert isinstance(results[3], DetectionResult) and results[3].labels == ("car",)
    # The same requests one at a time give the same answers: batching changes nothing.
    assert results == [backend.run([r])[0] for r in requests]


def test_concurrent_async_callers_share_a_batch_and_each_gets_its_own(
    scripted: dict[str, Any], batch_settings: Settings, images: list[Image.Image]
) -> None:
    manager = ModelManager(batch_settings.model_copy(update={"max_batch_size": 4, "batch_wait_ms": 60_000}))
    backend: FlorenceBackend = manager.get()
    spy = Spy(backend)
    manager._batchers["florence2"] = make_batcher(spy, max_batch_size=4, batch_wait_s=60)
    tasks = ["<CAPTION>", "<OD>", "<CAPTION>", "<OD>"]
    calls = [[TaskRequest.create(image, get_task(task))] for image, task in zip(images, tasks, strict=True)]

    async def main() -> list[list[Any]]:
        return await asyncio.gather(*(manager.run_async(call) for call in calls))

    try:
        answers = asyncio.run(main())
    finally:
        manager.shutdown()
    assert spy.sizes == [4]  # the batch waited for all four callers, then ran once
    names = [r[0].text if isinstance(r[0], TextResult) else r[0].labels[0] for r in answers]
    assert names == list(NAMES)
    assert [type(r[0]) for r in answers] == [TextResult, DetectionResult, TextResult, DetectionResult]


# -- size and wait limits ------------------------------------------------------------------------------------
def test_batches_never_exceed_max_batch_size(
    scripted: dict[str, Any], backend: FlorenceBackend, images: list[Image.Image]
) -> None:
    spy = Spy(backend, hold_first=True)
    batcher = make_batcher(spy, max_batch_size=3, batch_wait_s=0)
    try:
        first = batcher.enqueue([caption(backend, images[0])], GREEDY)
        assert spy.entered.wait(WAIT)  # the worker is busy with the first batch ...
        later = batcher.enqueue([caption(backend, images[i % 4]) for i in range(7)], GREEDY)  # ... while 7 wait
        spy.release.set()
        texts = [f.result(WAIT).text for f in first + later]
    finally:
        batcher.shutdown()
    assert spy.sizes == [1, 3, 3, 1]
    assert batcher.stats.largest_batch == 3
    assert texts == [f"</s><s>{NAMES[i % 4]}<loc_100><loc_200><loc_300><loc_400></s>" for i in [0, *range(7)]]


def test_first_request_waits_for_later_arrivals_within_the_window(
    scripted: dict[str, Any], backend: FlorenceBackend, images: list[Image.Image]
) -> None:
    spy = Spy(backend)
    batcher = make_batcher(spy, max_batch_size=3, batch_wait_s=60)
    try:
        futures = batcher.enqueue([caption(backend, images[0])], GREEDY)
        futures += batcher.enqueue([caption(backend, images[1])], GREEDY)  # separate arrivals ...
        futures += batcher.enqueue([caption(backend, images[2])], GREEDY)  # ... joined into one batch
        texts = [f.result(WAIT).text for f in futures]
    finally:
        batcher.shutdown()
    assert spy.sizes == [3]
    assert [t.split("<loc_")[0] for t in texts] == ["</s><s>sky", "</s><s>dog", "</s><s>tree"]


def test_a_lone_request_runs_when_the_window_closes(
    scripted: dict[str, Any], backend: FlorenceBackend, images: list[Image.Image]
) -> None:
    spy = Spy(backend)
    batcher = make_batcher(spy, max_batch_size=8, batch_wait_s=0.02)
    try:
        (future,) = batcher.enqueue([caption(backend, images[3])], GREEDY)
        assert future.result(WAIT).text.startswith("</s><s>car")
    finally:
        batcher.shutdown()
    assert spy.sizes == [1]


def test_requests_with_other_generation_settings_never_share_a_batch(
    scripted: dict[str, Any], backend: FlorenceBackend, images: list[Image.Image]
) -> None:
    short = GenerationOptions(num_beams=1, max_new_tokens=2)
    spy = Spy(backend, hold_first=True)
    batcher = make_batcher(spy, max_batch_size=8, batch_wait_s=0)
    try:
        first = batcher.enqueue([caption(backend, images[0])], GREEDY)
        assert spy.entered.wait(WAIT)
        a = batcher.enqueue([caption(backend, images[1])], GREEDY)
        b = batcher.enqueue([caption(backend, images[2])], short)
        c = batcher.enqueue([caption(backend, images[3])], GREEDY)
        spy.release.set()
        texts = [f.result(WAIT).text for f in first + a + b + c]
    finally:
        batcher.shutdown()
    assert spy.sizes == [1, 2, 1]
    assert spy.keys == [GREEDY, GREEDY, short]  # the oldest request's settings go first; c joins a
    assert texts[2] == "</s><s>t"  # two new tokens only: <s> and the first BPE piece of "tree"
    assert texts[3].startswith("</s><s>car<loc_100>")


# -- queue bound and cancellation ----------------------------------------------------------------------------
def test_full_queue_refuses_with_busy_and_an_empty_one_admits_any_count(backend: FlorenceBackend) -> None:
    batcher = make_batcher(Spy(backend), max_queue_size=2)
    try:
        batcher.admit(5)  # empty queue: one big call is never refused
        batcher.release(5)
        batcher.admit(2)
        with pytest.raises(Busy) as caught:
            batcher.admit(1)
        assert caught.value.retry_after == 5
        assert batcher.queue_depth == 2
        batcher.release(2)
        assert batcher.queue_depth == 0
    finally:
        batcher.shutdown()


def test_cancelled_requests_are_dropped_before_their_batch_starts(
    scripted: dict[str, Any], backend: FlorenceBackend, images: list[Image.Image]
) -> None:
    spy = Spy(backend, hold_first=True)
    batcher = make_batcher(spy, max_batch_size=8)
    try:
        first = batcher.enqueue([caption(backend, images[0])], GREEDY)
        assert spy.entered.wait(WAIT)
        gone, kept = batcher.enqueue([caption(backend, images[1]), caption(backend, images[2])], GREEDY)
        assert gone.cancel()
        assert batcher.queue_depth == 1
        spy.release.set()
        assert kept.result(WAIT).text.startswith("</s><s>tree")
        assert first[0].result(WAIT).text.startswith("</s><s>sky")
    finally:
        batcher.shutdown()
    assert spy.sizes == [1, 1]
    assert gone.cancelled()


def test_cancelling_an_async_caller_drops_its_queued_requests(
    scripted: dict[str, Any], batch_settings: Settings, images: list[Image.Image]
) -> None:
    manager = ModelManager(batch_settings)
    backend: FlorenceBackend = manager.get()
    spy = Spy(backend, hold_first=True)
    batcher = manager._batchers["florence2"] = make_batcher(spy, max_batch_size=8)

    async def main() -> None:
        blocker = asyncio.create_task(manager.run_async([TaskRequest.create(images[0], get_task("OD"))]))
        assert await asyncio.to_thread(spy.entered.wait, WAIT)
        leaving = asyncio.create_task(manager.run_async([TaskRequest.create(images[1], get_task("OD"))]))
        while batcher.waiting == 0:  # until its request is queued behind the held batch
            await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        for _ in range(WAIT * 100):  # the cancellation reaches the queued request on a later loop turn
            if manager.queue_depth == 0:
                break
            await asyncio.sleep(0.01)
        assert manager.queue_depth == 0
        spy.release.set()
        (result,) = await blocker
        assert result.labels == ("sky",)

    try:
        asyncio.run(main())
    finally:
        manager.shutdown()
    assert spy.sizes == [1]


# -- out of memory -----------------------------------------------------------------------------------------
def test_out_of_memory_splits_the_batch_down_until_it_fits(
    scripted: dict[str, Any], backend: FlorenceBackend, images: list[Image.Image]
) -> None:
    scripted["oom_above"] = 2  # the real model's generate raises CUDA OOM for more than 2 rows
    spy = Spy(backend)
    batcher = make_batcher(spy, max_batch_size=8)
    try:
        futures = batcher.enqueue([caption(backend, images[i % 4]) for i in range(5)], GREEDY)
        texts = [f.result(WAIT).text for f in futures]
    finally:
        batcher.shutdown()
    assert spy.sizes == [5, 2, 3, 1, 2]  # 5 fails -> 2 + 3; 3 fails -> 1 + 2
    assert batcher.stats.splits == 2
    assert [t.split("<loc_")[0].removeprefix("</s><s>") for t in texts] == ["sky", "dog", "tree", "car", "sky"]


def test_a_request_that_cannot_fit_alone_fails_clearly_and_serving_goes_on(
    scripted: dict[str, Any], batch_settings: Settings, images: list[Image.Image]
) -> None:
    manager = ModelManager(batch_settings.model_copy(update={"max_batch_size": 4}))
    try:
        scripted["oom_above"] = 0
        with pytest.raises(OutOfDeviceMemory) as caught:
            manager.run([TaskRequest.create(images[0], get_task("<CAPTION>"))] * 2)
        error: AppError = caught.value
        assert error.code == "out_of_memory" and error.http_status == 503
        assert "Not enough GPU memory for 1 request(s)" in error.message
        assert manager.status()[0]["batching"]["split_retries"] == 1
        scripted["oom_above"] = None
        (result,) = manager.run([TaskRequest.create(images[1], get_task("<CAPTION>"))])
        assert result == TextResult("<CAPTION>", images[1].size, text="dog")
    finally:
        manager.shutdown()


def test_shutdown_waits_for_the_worker_to_end() -> None:
    # A worker still unwinding at interpreter exit aborted the CLI (status 134) after int8 runs.
    batcher = make_batcher(lambda prepared, key: ["x"] * len(prepared))
    assert batcher._worker.is_alive()
    batcher.shutdown()
    assert not batcher._worker.is_alive()
