"""Every task end to end through the tiny checkpoint, the model state machine, and input checks.

The tiny model is randomly initialised, so answers are noise; these tests check shapes, types,
order, errors and threading, and `test_engine_parsing.py` checks exact values.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.core.config import Settings
from app.core.errors import AppError, InvalidInput, ModelUnavailable, UnknownTask
from app.core.images import ImageLimits, LoadedImage, load_image_bytes
from app.core.results import DetectionResult, OCRResult, SegmentationResult, TextResult
from app.core.tasks import FLORENCE_TASKS as TASKS
from app.core.tasks import PROMPT_TASKS, OutputKind, TaskSpec, get_task, strip_markup
from app.models.florence import FlorenceBackend, TaskRequest
from app.models.manager import ModelManager, ModelState
from app.services.analysis import AnalysisService

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)
RESULT_TYPES: dict[OutputKind, tuple[type, ...]] = {
    OutputKind.TEXT: (TextResult,),
    OutputKind.BOXES: (DetectionResult,),
    OutputKind.POLYGONS: (SegmentationResult,),
    OutputKind.OCR: (OCRResult,),
    # open-vocabulary detection answers with boxes or, for masks, polygons
    OutputKind.MIXED: (DetectionResult, SegmentationResult),
}


def extra_input(spec: TaskSpec) -> dict[str, Any]:
    if spec.needs_text:
        return {"text": "a cat"}
    if spec.needs_region:
        return {"region": (40, 30, 300, 280)}
    return {}


@pytest.fixture(scope="module")
def service(tiny_manager: ModelManager) -> AnalysisService:
    return AnalysisService(tiny_manager)


@pytest.fixture(scope="module")
def backend(tiny_manager: ModelManager) -> FlorenceBackend:
    loaded: FlorenceBackend = tiny_manager.get("florence2")
    return loaded


@pytest.fixture(scope="module")
def photo_upload(photo: Image.Image) -> LoadedImage:
    """The photo as a user uploads it: JPEG bytes through the real intake."""
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return load_image_bytes(buffer.getvalue(), LIMITS, name="chelsea.jpg")


class ModelWorkSpy:
    """Wraps the real backend's per-request preparation and its `generate` call and counts them."""

    def __init__(self, backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prepared = 0
        self.generate_batches: list[int] = []
        real_prepare, real_forward = backend.prepare, backend.forward

        def prepare(request: TaskRequest) -> Any:
            self.prepared += 1
            return real_prepare(request)

        def forward(inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.generate_batches.append(int(inputs["input_ids"].shape[0]))
            return real_forward(inputs, *args, **kwargs)

        monkeypatch.setattr(backend, "prepare", prepare)
        monkeypatch.setattr(backend, "forward", forward)

    @property
    def model_work(self) -> int:
        return self.prepared + len(self.generate_batches)


@pytest.fixture
def spy(backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelWorkSpy]:
    yield ModelWorkSpy(backend, monkeypatch)


# -- every task ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", TASKS, ids=[s.short_name for s in TASKS])
def test_every_task_runs_end_to_end_on_the_photo(
    service: AnalysisService, photo_upload: LoadedImage, spec: TaskSpec, spy: ModelWorkSpy
) -> None:
    (outcome,) = service.analyze([photo_upload], spec.token, **extra_input(spec))
    assert outcome.error is None and outcome.name == "chelsea.jpg"
    result = outcome.result
    assert result is not None and isinstance(result, RESULT_TYPES[spec.output_kind])
    assert result.task == spec.token
    assert result.image_wh == (451, 300)
    assert result.region == ((40.0, 30.0, 300.0, 280.0) if spec.needs_region else None)
    body = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert body["task"] == spec.token and body["image_wh"] == [451, 300]
    assert isinstance(result.summary(), str) and result.summary()
    if isinstance(result, DetectionResult | SegmentationResult):
        json.dumps(result.to_coco(), allow_nan=False)
    if isinstance(result, TextResult):
        assert "<pad>" not in result.text and "<loc_" not in result.text
    # Caption + grounding: the caption, then (when the caption has words) grounding it: one more call.
    calls = 2 if spec.cascade and isinstance(result, DetectionResult) and strip_markup(result.caption or "") else 1
    assert spy.prepared == calls and spy.generate_batches == [1] * calls


def test_tasks_resolve_by_token_short_name_and_alias() -> None:
    assert get_task("<OD>") is get_task("OD") is get_task("od") is get_task(" object-detection ")
    assert get_task("caption").token == "<CAPTION>"
    assert get_task("Region to OCR").token == "<REGION_TO_OCR>"
    assert get_task("OCR_WITH_REGION").token == "<OCR_WITH_REGION>"
    assert len({spec.token for spec in TASKS}) == 16  # the 15 prompts and caption + grounding


@pytest.mark.parametrize("name", ["FOO", "<ODD>", "", "caption please"])
def test_unknown_task_lists_every_valid_task(name: str) -> None:
    with pytest.raises(UnknownTask) as caught:
        get_task(name)
    assert caught.value.code == "unknown_task"
    for spec in TASKS:
        assert spec.short_name in caught.value.message


def test_unknown_task_in_the_service_is_raised_before_model_work(
    service: AnalysisService, photo_upload: LoadedImage, spy: ModelWorkSpy
) -> None:
    with pytest.raises(UnknownTask, match="CAPTION_TO_PHRASE_GROUNDING"):
        service.analyze([photo_upload], "<NOT_A_TASK>")
    assert spy.model_work == 0


# -- image kinds ---------------------------------------------------------------------------------------


def rgba_half_transparent() -> Image.Image:
    image = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 20, 30))
    return image


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (33, 17), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, index 1 blue
    image.paste(0, (0, 0, 10, 17))
    image.info["transparency"] = 0
    return image


IMAGE_KINDS: dict[str, Callable[[], Image.Image]] = {
    "rgba": rgba_half_transparent,
    "palette-transparent": palette_with_transparency,
    "greyscale": lambda: Image.new("L", (64, 48), 77),
    "greyscale-alpha": lambda: Image.new("LA", (20, 20), (10, 0)),
    "16-bit": lambda: Image.new("I;16", (25, 16), 25600),
    "16-bit-big-endian": lambda: Image.new("I;16B", (16, 25), 65535),
    "cmyk": lambda: Image.new("CMYK", (30, 30), (0, 255, 255, 0)),
    "bilevel": lambda: Image.new("1", (9, 9), 1),
    "1x1": lambda: Image.new("RGB", (1, 1), (1, 2, 3)),
    "7x1000": lambda: Image.new("RGB", (7, 1000), (9, 9, 9)),
    "1000x3": lambda: Image.new("RGB", (1000, 3), (9, 9, 9)),
}
# (x, y) → expected RGB after conversion; transparency becomes white
EXPECTED_PIXELS: dict[str, dict[tuple[int, int], tuple[int, int, int]]] = {
    "rgba": {(0, 0): (255, 255, 255), (39, 29): (255, 0, 0)},
    "palette-transparent": {(0, 0): (255, 255, 255), (32, 16): (0, 0, 255)},
    "greyscale": {(0, 0): (77, 77, 77)},
    "greyscale-alpha": {(5, 5): (255, 255, 255)},
    "16-bit": {(0, 0): (100, 100, 100)},  # 25600 / 256
    "16-bit-big-endian": {(0, 0): (255, 255, 255)},
    "cmyk": {(0, 0): (255, 0, 0)},
    "bilevel": {(0, 0): (255, 255, 255)},
    "1x1": {(0, 0): (1, 2, 3)},
}


def test_every_image_kind_is_converted_and_analysed_in_order(
    backend: FlorenceBackend, tiny_manager: ModelManager
) -> None:
    images = {kind: make() for kind, make in IMAGE_KINDS.items()}
    requests = [TaskRequest.create(image, get_task("OD")) for image in images.values()]
    for kind, request in zip(images, requests, strict=True):
        assert request.image.mode == "RGB", kind
        assert request.image.size == images[kind].size, kind
        for xy, rgb in EXPECTED_PIXELS.get(kind, {}).items():
            assert request.image.getpixel(xy) == rgb, kind
    results = tiny_manager.run(requests)
    assert [r.image_wh for r in results] == [image.size for image in images.values()]
    assert all(isinstance(r, DetectionResult) for r in results)
    for result in results:
        width, height = result.image_wh
        for x1, y1, x2, y2 in result.xyxy:  # type: ignore[union-attr]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height


@pytest.mark.parametrize("kind", ["rgba", "palette-transparent", "greyscale", "7x1000"])
def test_image_kinds_with_a_region_task(kind: str, tiny_manager: ModelManager) -> None:
    image = IMAGE_KINDS[kind]()
    width, height = image.size
    request = TaskRequest.create(image, get_task("REGION_TO_DESCRIPTION"), region=(0, 0, width, height))
    (result,) = tiny_manager.run([request])
    assert isinstance(result, TextResult)
    assert result.region == (0.0, 0.0, float(width), float(height))


# -- batches -----------------------------------------------------------------------------------------------


def test_batch_of_images_returns_one_result_per_image_in_order(
    service: AnalysisService, photo: Image.Image, spy: ModelWorkSpy
) -> None:
    sizes = [(451, 300), (64, 200), (200, 64), (33, 33)]
    images = [LoadedImage(photo.resize(size), "PNG", f"image-{i}.png") for i, size in enumerate(sizes)]
    outcomes = service.analyze(images, "caption")
    assert [o.name for o in outcomes] == ["image-0.png", "image-1.png", "image-2.png", "image-3.png"]
    assert [o.result.image_wh for o in outcomes if o.result is not None] == sizes
    assert all(isinstance(o.result, TextResult) for o in outcomes)
    assert spy.prepared == 4 and sum(spy.generate_batches) == 4


def test_a_region_that_misses_one_image_fails_only_that_image(
    service: AnalysisService, photo: Image.Image, spy: ModelWorkSpy
) -> None:
    images = [LoadedImage(photo, "PNG", "big.png"), LoadedImage(photo.resize((50, 50)), "PNG", "small.png")]
    big, small = service.analyze(images, "REGION_TO_CATEGORY", region=(100, 100, 200, 200))
    assert isinstance(big.result, TextResult) and big.error is None
    assert small.result is None and small.error is not None
    assert small.error.code == "region_outside_image"
    assert spy.prepared == 1 and spy.generate_batches == [1]


def test_mixed_tasks_in_one_generate_call(backend: FlorenceBackend, photo: Image.Image, spy: ModelWorkSpy) -> None:
    requests = [TaskRequest.create(photo, spec, **extra_input(spec)) for spec in PROMPT_TASKS]
    results = backend.run(requests)
    assert spy.generate_batches == [15]
    for spec, result in zip(PROMPT_TASKS, results, strict=True):
        assert isinstance(result, RESULT_TYPES[spec.output_kind]), spec.token
        assert result.task == spec.token
        json.dumps(result.to_dict(), allow_nan=False)


# -- inputs are checked before any model work -----------------------------------------------------


@pytest.mark.parametrize(
    ("task", "extra", "code"),
    [
        ("CAPTION", {"text": "a cat"}, "unexpected_text"),
        ("OD", {"region": (1, 1, 50, 50)}, "unexpected_region"),
        ("OPEN_VOCABULARY_DETECTION", {}, "missing_text"),
        ("CAPTION_TO_PHRASE_GROUNDING", {"text": "   "}, "missing_text"),
        ("REGION_TO_OCR", {}, "missing_region"),
        ("REGION_TO_SEGMENTATION", {"region": (500, 500, 900, 900)}, "region_outside_image"),
        ("REGION_TO_CATEGORY", {"region": (10, 10, float("nan"), 50)}, "invalid_region"),
        ("REGION_TO_CATEGORY", {"region": (10, 10, 50)}, "invalid_region"),
        ("OPEN_VOCABULARY_DETECTION", {"text": "x" * 1001}, "text_too_long"),
        ("OPEN_VOCABULARY_DETECTION", {"text": "find <OD> here"}, "invalid_text"),
        ("CAPTION_TO_PHRASE_GROUNDING", {"text": "a cat<loc_5><loc_6>"}, "invalid_text"),
        ("REFERRING_EXPRESSION_SEGMENTATION", {"text": "</s>"}, "invalid_text"),
    ],
)
def test_bad_extra_input_is_rejected_before_model_work(
    service: AnalysisService,
    photo_upload: LoadedImage,
    spy: ModelWorkSpy,
    task: str,
    extra: dict[str, Any],
    code: str,
) -> None:
    spec = get_task(task)
    with pytest.raises(InvalidInput) as caught:
        TaskRequest.create(photo_upload.image, spec, **extra)
    assert caught.value.code == code
    (outcome,) = service.analyze([photo_upload], spec, **extra)
    assert outcome.result is None and outcome.error is not None and outcome.error.code == code
    (outcome,) = asyncio.run(service.analyze_async([photo_upload], spec, **extra))
    assert outcome.error is not None and outcome.error.code == code
    assert spy.model_work == 0


def test_text_with_ordinary_angle_brackets_is_accepted(photo: Image.Image) -> None:
    request = TaskRequest.create(photo, get_task("OVD"), text="  a < b > c  ")
    assert request.prompt() == "<OPEN_VOCABULARY_DETECTION>a < b > c"


# -- the event loop stays free --------------------------------------------------------------------------


def test_analyze_async_does_not_block_the_event_loop(
    service: AnalysisService, photo_upload: LoadedImage, backend: FlorenceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`generate` waits until the event loop has made progress; a blocked loop would never let it."""
    events: list[str] = []
    generate_started, loop_progressed = threading.Event(), threading.Event()
    loop_seen: list[bool] = []
    real_forward = backend.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        events.append("generate started")
        generate_started.set()
        loop_seen.append(loop_progressed.wait(timeout=60))  # safety net only: never reached when correct
        output = real_forward(*args, **kwargs)
        events.append("generate finished")
        return output

    monkeypatch.setattr(backend, "forward", forward)

    async def ticker() -> int:
        await asyncio.to_thread(generate_started.wait, 60)
        ticks = 0
        for _ in range(3):
            await asyncio.sleep(0)
            ticks += 1
        events.append("loop ticked")
        loop_progressed.set()
        return ticks

    async def scenario() -> tuple[int, list[Any]]:
        ticking = asyncio.create_task(ticker())
        outcomes = await service.analyze_async([photo_upload], "OD")
        return await ticking, outcomes

    ticks, outcomes = asyncio.run(scenario())
    assert loop_seen == [True]
    assert ticks == 3
    assert events == ["generate started", "loop ticked", "generate finished"]
    assert isinstance(outcomes[0].result, DetectionResult)


# -- model state ------------------------------------------------------------------------------------------


def test_shared_manager_reports_ready(tiny_manager: ModelManager, tiny_settings: Settings) -> None:
    (status,) = tiny_manager.status()
    assert status["state"] == "ready"
    assert status["model_id"] == tiny_settings.model_id
    assert status["device"] == "cpu" and status["dtype"] == "float32"
    assert status["load_seconds"] > 0


def test_state_machine_failed_with_reason_then_retried_to_ready(
    tiny_settings: Settings, tiny_florence_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    later = tmp_path / "checkpoint-copied-later"
    settings = tiny_settings.model_copy(update={"model_id": str(later), "warmup": True})
    manager = ModelManager(settings)
    try:
        assert manager.state() is ModelState.NOT_LOADED
        assert manager.status()[0]["state"] == "not_loaded"

        with pytest.raises(ModelUnavailable) as caught:
            manager.get()
        assert caught.value.code == "model_missing"
        assert manager.state() is ModelState.FAILED
        status = manager.status()[0]
        assert status["state"] == "failed"
        assert str(later) in status["error"] and "does not exist" in status["error"]

        later.symlink_to(tiny_florence_dir, target_is_directory=True)
        backend = manager.slot().backend
        states_during_load: list[ModelState] = []
        real_load = backend.load

        def load() -> None:
            states_during_load.append(manager.state())
            real_load()

        backend.load = load  # type: ignore[method-assign]
        with caplog.at_level("INFO", logger="app.models.florence"):
            assert manager.get() is backend
        assert states_during_load == [ModelState.LOADING]
        assert manager.state() is ModelState.READY
        status = manager.status()[0]
        assert status["state"] == "ready" and "error" not in status
        assert any("warm-up took" in record.getMessage() for record in caplog.records)
        # loaded once: a second get does not load again
        assert manager.get() is backend and states_during_load == [ModelState.LOADING]
        (result,) = manager.run([TaskRequest.create(Image.new("RGB", (20, 20)), get_task("OCR"))])
        assert isinstance(result, TextResult)
    finally:
        manager.shutdown()


def test_a_broken_checkpoint_is_a_reported_failure_not_a_crash(tiny_settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "florence2"}')
    manager = ModelManager(tiny_settings.model_copy(update={"model_id": str(tmp_path)}))
    try:
        with pytest.raises(AppError) as caught:
            manager.get()
        assert isinstance(caught.value, ModelUnavailable)
        assert caught.value.code == "model_load_failed"
        assert str(tmp_path) in caught.value.message
        assert manager.status()[0]["state"] == "failed"
    finally:
        manager.shutdown()
