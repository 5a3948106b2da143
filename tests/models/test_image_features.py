"""The image-feature cache: a further task on the same image skips the image encoder, with equal results.

The cache itself is checked with a counting encoder; the backend is the real tiny Florence-2, run with
the cache on and off, and the image encoder's calls are counted with a forward hook on the real module.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.config import Settings
from app.core.tasks import get_task
from app.models.florence import FlorenceBackend, GenerationOptions, TaskRequest
from app.models.image_features import ImageFeatureCache, pixels_digest
from app.models.manager import ModelManager


class CountingEncoder:
    """Encodes row i of a batch as a tensor filled with the digest's number; records each batch."""

    def __init__(self, digests: list[str]) -> None:
        self.digests = digests
        self.batches: list[list[str]] = []

    def __call__(self, indices: list[int]) -> torch.Tensor:
        self.batches.append([self.digests[i] for i in indices])
        return torch.stack([torch.full((2, 3), float(self.digests[i])) for i in indices])


def lookup(cache: ImageFeatureCache, digests: list[str]) -> tuple[list[float], list[list[str]]]:
    encoder = CountingEncoder(digests)
    features = cache.features(digests, encoder)
    return [float(f[0, 0]) for f in features], encoder.batches


def test_missing_images_are_encoded_once_as_one_batch_and_kept_in_order() -> None:
    cache = ImageFeatureCache(capacity=8)
    assert lookup(cache, ["1", "2", "1", "3"]) == ([1.0, 2.0, 1.0, 3.0], [["1", "2", "3"]])
    assert lookup(cache, ["3", "4", "1"]) == ([3.0, 4.0, 1.0], [["4"]])
    assert lookup(cache, ["2", "1"]) == ([2.0, 1.0], [])
    assert (cache.hits, cache.misses) == (5, 4)


def test_the_least_recently_used_image_is_dropped_at_capacity() -> None:
    cache = ImageFeatureCache(capacity=2)
    lookup(cache, ["1", "2"])
    lookup(cache, ["1"])  # 1 is now more recent than 2
    lookup(cache, ["3"])
    assert len(cache) == 2
    assert lookup(cache, ["1", "3"])[1] == []
    assert lookup(cache, ["2"])[1] == [["2"]]


def test_cached_features_do_not_keep_their_batch_alive() -> None:
    cache = ImageFeatureCache(capacity=4)
    batch = torch.zeros(3, 2, 3)
    features = cache.features(["a", "b", "c"], lambda indices: batch[indices])
    batch.fill_(7)
    assert all(float(f.sum()) == 0 for f in features)
    assert all(f.untyped_storage().nbytes() == 2 * 3 * 4 for f in features)


def test_the_digest_tells_pixels_apart() -> None:
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    changed = pixels.copy()
    changed[3, 3, 2] = 1
    assert pixels_digest(pixels) == pixels_digest(pixels.copy())
    assert pixels_digest(pixels) != pixels_digest(changed)
    assert pixels_digest(pixels) != pixels_digest(pixels.reshape(4, 12, 1))


# -- the real backend --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backends(tiny_settings: Settings) -> Iterator[tuple[FlorenceBackend, FlorenceBackend]]:
    cached = ModelManager(tiny_settings.model_copy(update={"image_feature_cache": 4}))
    uncached = ModelManager(tiny_settings.model_copy(update={"image_feature_cache": 0}))
    yield cached.get(), uncached.get()
    cached.shutdown()
    uncached.shutdown()


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(x) for x in (data.astronaut(), data.chelsea(), data.coffee())]


def requests_for(images: list[Image.Image]) -> list[TaskRequest]:
    """A mix of tasks and prompt lengths, one per image in turn."""
    tasks = [
        ("<OD>", None, None),
        ("<CAPTION_TO_PHRASE_GROUNDING>", "a cat on a red car", None),
        ("<REGION_TO_DESCRIPTION>", None, [10, 20, 200, 220]),
        ("<MORE_DETAILED_CAPTION>", None, None),
    ]
    return [
        TaskRequest.create(images[i % len(images)], get_task(token), text=text, region=region)
        for i, (token, text, region) in enumerate(tasks)
    ]


class EncoderCalls:
    """Counts the images the real vision tower encodes."""

    def __init__(self, backend: FlorenceBackend) -> None:
        self.images = 0
        self.handle = backend._model.model.vision_tower.register_forward_hook(self.count)

    def count(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: object) -> None:
        self.images += int(args[0].shape[0])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_features_give_the_same_results_as_encoding_each_time(
    backends: tuple[FlorenceBackend, FlorenceBackend], pictures: list[Image.Image], num_beams: int
) -> None:
    cached, uncached = backends
    assert cached._features is not None
    cached._features.clear()
    requests = requests_for(pictures)
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=24)
    expected = uncached.run(requests, generation=options)
    calls = EncoderCalls(cached)
    try:
        first = [cached.run([request], generation=options)[0] for request in requests]
        second = cached.run(requests, generation=options)
    finally:
        calls.handle.remove()
    assert [r.to_dict() for r in first] == [r.to_dict() for r in expected]
    assert [r.to_dict() for r in second] == [r.to_dict() for r in expected]
    # 4 requests on 3 images: the 4th request and the whole second batch reuse what was encoded.
    assert calls.images == 3


def test_a_further_task_on_the_same_image_skips_the_image_encoder(
    backends: tuple[FlorenceBackend, FlorenceBackend], pictures: list[Image.Image]
) -> None:
    cached, _ = backends
    calls = EncoderCalls(cached)
    try:
        cached.run([TaskRequest.create(pictures[1], get_task("<CAPTION>"))])
        before = calls.images
        for token in ("<OD>", "<OCR>", "<DENSE_REGION_CAPTION>"):
            cached.run([TaskRequest.create(pictures[1], get_task(token))])
        # The same picture decoded afresh (a new upload) is the same pixels, so it is found too.
        cached.run([TaskRequest.create(pictures[1].copy(), get_task("<CAPTION>"))])
        assert calls.images == before
        cached.run([TaskRequest.create(pictures[1].rotate(90, expand=True), get_task("<CAPTION>"))])
        assert calls.images == before + 1
    finally:
        calls.handle.remove()


def test_out_of_memory_while_encoding_images_splits_the_batch(
    tiny_settings: Settings, pictures: list[Image.Image]
) -> None:
    """CUDA's OOM error raised by the real image encoder for batches over one image: each caller still gets
    its result, from single-image retries, and the cache ends up holding every image."""
    manager = ModelManager(
        tiny_settings.model_copy(update={"image_feature_cache": 8, "max_batch_size": 3, "batch_wait_ms": 60_000})
    )
    backend: FlorenceBackend = manager.get()

    def refuse_batches(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = backend._model.model.vision_tower.register_forward_pre_hook(refuse_batches)
    try:
        requests = [TaskRequest.create(picture, get_task("<CAPTION>")) for picture in pictures]
        results = manager.run(requests)
        splits = manager.status()[0]["batching"]["split_retries"]
    finally:
        handle.remove()
        manager.shutdown()
    assert [r.task for r in results] == ["<CAPTION>"] * 3
    assert splits >= 1
    assert backend._features is not None and len(backend._features) == 3
