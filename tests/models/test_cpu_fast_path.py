"""CPU_OPTIMIZATION=int8 and CPU_THREADS on the real tiny checkpoint: same kinds of results as float32."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from app.core.config import Settings
from app.core.results import DetectionResult, OCRResult, SegmentationResult, TextResult
from app.core.tasks import get_task
from app.models.acceleration import quantize_int8
from app.models.florence import FlorenceBackend, TaskRequest

ENGINE_BEFORE = torch.backends.quantized.engine

TASKS = [
    ("<CAPTION>", {}, TextResult),
    ("<OD>", {}, DetectionResult),
    ("<OCR_WITH_REGION>", {}, OCRResult),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", {"text": "the cat"}, SegmentationResult),
    ("<REGION_TO_DESCRIPTION>", {"region": [10, 10, 120, 90]}, TextResult),
]


def _dynamic_linear() -> type:
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


@pytest.fixture(scope="module")
def int8_backend(tiny_settings: Settings) -> Iterator[FlorenceBackend]:
    threads = torch.get_num_threads()
    backend = FlorenceBackend(tiny_settings.model_copy(update={"cpu_optimization": "int8", "cpu_threads": 1}))
    backend.load()
    try:
        yield backend
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide; leave other tests as they were


def test_int8_quantises_every_linear_layer_and_sets_the_thread_count(int8_backend: FlorenceBackend) -> None:
    model = int8_backend._model
    dynamic = _dynamic_linear()
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    quantized = [m for m in model.modules() if isinstance(m, dynamic)]
    assert len(quantized) > 20
    assert all(m.weight().dtype == torch.qint8 for m in quantized)
    assert isinstance(model.lm_head, dynamic)
    assert torch.get_num_threads() == 1


def test_int8_leaves_the_process_wide_engine_as_it_was(int8_backend: FlorenceBackend) -> None:
    assert torch.backends.quantized.engine == ENGINE_BEFORE


@pytest.mark.parametrize(("task", "extra", "kind"), TASKS, ids=[t[0] for t in TASKS])
def test_int8_gives_the_same_result_types_as_float32(
    int8_backend: FlorenceBackend, tiny_manager: object, photo: Image.Image, task: str, extra: dict, kind: type
) -> None:
    fp32: FlorenceBackend = tiny_manager.get()  # type: ignore[attr-defined]
    request = TaskRequest.create(photo, get_task(task), **extra)
    (quantized_result,) = int8_backend.run([request])
    (reference,) = fp32.run([request])
    assert type(quantized_result) is type(reference) is kind
    assert quantized_result.task == reference.task == task
    assert quantized_result.image_wh == reference.image_wh == photo.size
    assert quantized_result.region == reference.region


def test_int8_batches_of_mixed_tasks_run(int8_backend: FlorenceBackend, photo: Image.Image) -> None:
    requests = [TaskRequest.create(photo, get_task(t), **extra) for t, extra, _ in TASKS]
    results = int8_backend.run(requests)
    assert [type(r) for r in results] == [kind for _, _, kind in TASKS]


def test_vision_scope_quantises_only_the_image_encoder(tiny_settings: Settings) -> None:
    backend = FlorenceBackend(tiny_settings)
    backend.load()
    model = quantize_int8(backend._model, "vision")
    dynamic = _dynamic_linear()
    assert not any(type(m) is torch.nn.Linear for m in model.model.vision_tower.modules())
    assert not any(isinstance(m, dynamic) for m in model.model.language_model.modules())
    assert type(model.lm_head) is torch.nn.Linear


def test_cpu_optimization_is_off_by_default(tiny_manager: object) -> None:
    fp32: FlorenceBackend = tiny_manager.get()  # type: ignore[attr-defined]
    assert fp32.settings.cpu_optimization == "none"
    assert any(type(m) is torch.nn.Linear for m in fp32._model.modules())
