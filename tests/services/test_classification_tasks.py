"""The CLASSIFY and ZERO_SHOT tasks through AnalysisService on tiny random ResNet / CLIP / SigLIP checkpoints
loaded through from_pretrained.

Expected probabilities come either from known logits (the tiny ResNet's head is a fixed bias) or
from the checkpoint's own `forward` (`logits_per_image`), computed independently of the app's maths.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from app.core.classification_results import ClassificationResult, ZeroShotResult
from app.core.config import Settings
from app.core.errors import Busy, InvalidInput, ModelUnavailable, UnknownTask
from app.core.images import LoadedImage
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.core.tasks import CLASSIFY, ZERO_SHOT
from app.models.manager import ModelManager, ModelState
from app.models.registry import BackendRegistry, build_manager
from app.rendering.charts import probability_chart_png
from app.services.analysis import AnalysisService, ImageOutcome
from tests.tiny_models import RESNET_BIAS_LOGITS, ZERO_SHOT_TEXT_LENGTH, build_tiny_resnet, build_tiny_siglip

LABELS = ["a cat", "a dog", "a red car"]


def settings_with(base: Settings, **overrides: Any) -> Settings:
    return Settings(_env_file=None, **{**base.model_dump(), **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def manager(classify_settings: Settings) -> Iterator[ModelManager]:
    built = build_manager(classify_settings)
    yield built
    built.shutdown()


class ClassificationService:
    """The two classification tasks as every edge runs them: input checked by `check_input`, then
    `AnalysisService` (kept as one small adapter so each test reads as the classification it checks)."""

    def __init__(self, analysis: AnalysisService) -> None:
        self.analysis = analysis

    def _checked(self, top_n: int, language: str) -> TaskInput:
        return self.analysis.check_input(CLASSIFY, TaskInput(top_n=top_n, language=language))[1]

    async def classify(self, images: list, top_n: int = 3, language: str = "en") -> list[ImageOutcome]:
        return await self.analysis.analyze_async(images, CLASSIFY, options=self._checked(top_n, language))

    def classify_sync(self, images: list, top_n: int = 3, language: str = "en") -> list[ImageOutcome]:
        return self.analysis.analyze(images, CLASSIFY, options=self._checked(top_n, language))

    async def zero_shot(self, images: list, request: ZeroShotRequest) -> list[ImageOutcome]:
        return await self.analysis.analyze_async(images, ZERO_SHOT, options=TaskInput(labels=request))


@pytest.fixture(scope="module")
def service(manager: ModelManager) -> ClassificationService:
    return ClassificationService(AnalysisService(manager))


@pytest.fixture(scope="module")
def images(photo: Image.Image, astronaut: Image.Image) -> list[LoadedImage]:
    return [LoadedImage(photo, "JPEG", "chelsea"), LoadedImage(astronaut, "PNG", "astronaut")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def zero_shot(service: ClassificationService, images: list, labels: list[str], **options: Any) -> list[ImageOutcome]:
    """`service.zero_shot` with the request checked as every caller checks it (`ZeroShotRequest.create`)."""
    return run(service.zero_shot(images, ZeroShotRequest.create(labels, **options)))


def expected_softmax(logits: dict[int, float], num_classes: int = 1000) -> dict[int, float]:
    total = sum(math.exp(v) for v in logits.values()) + (num_classes - len(logits))
    return {index: math.exp(value) / total for index, value in logits.items()}


# -- ImageNet classifier ----------------------------------------------------------------------------------
def test_top_n_from_known_logits_with_synsets_and_names(service: ClassificationService, images: list) -> None:
    outcomes = run(service.classify(images, top_n=3))
    expected = expected_softmax(RESNET_BIAS_LOGITS)
    for outcome in outcomes:
        assert isinstance(outcome.result, ClassificationResult)
        ranked = [(p.index, p.class_id, p.name) for p in outcome.result.predictions]
        # 0 and 1 tie at logit 3.0: the lower class index comes first
        assert ranked == [(281, "n02123045", "tabby cat"), (282, "n02123159", "tiger cat"), (0, "n01440764", "tench")]
        probabilities = [p.probability for p in outcome.result.predictions]
        assert probabilities == pytest.approx([expected[281], expected[282], expected[0]], abs=1e-9)
    assert [o.name for o in outcomes] == ["chelsea", "astronaut"]


def test_german_names_and_run_metadata(service: ClassificationService, images: list, tiny_resnet_dir: Path) -> None:
    import transformers

    import app

    [outcome] = run(service.classify(images[:1], top_n=2, language="de"))
    body = outcome.result.to_dict()
    assert [(p["class"], p["name"]) for p in body["predictions"]] == [
        ("n02123045", "Getigerte Katze"),
        ("n02123159", "Tigerkatze"),
    ]
    assert body["model"] == str(tiny_resnet_dir)
    assert body["library"] == f"transformers-{transformers.__version__}"
    assert (body["version"], body["repository"]) == (app.__version__, app.REPOSITORY)
    assert body["duration"] > 0
    assert body["image_wh"] == list(images[0].image_wh)


def test_bad_language_and_top_n_fail_before_model_work(service: ClassificationService, images: list) -> None:
    with pytest.raises(InvalidInput) as raised:
        run(service.classify(images, language="fr"))
    assert raised.value.code == "unknown_language" and "en, de" in raised.value.message
    with pytest.raises(InvalidInput):
        run(service.classify(images, top_n=0))


def test_sync_variant_for_worker_threads(service: ClassificationService, images: list) -> None:
    [outcome] = service.classify_sync(images[:1], top_n=1)
    assert outcome.result.predictions[0].class_id == "n02123045"


def test_a_non_imagenet_checkpoint_keeps_its_own_labels(tmp_path: Path, classify_settings: Settings) -> None:
    directory = build_tiny_resnet(tmp_path / "pets", labels=["cat", "dog", "bird"], bias_logits={1: 2.0})
    manager = build_manager(settings_with(classify_settings, classifier_model_id=str(directory)))
    try:
        service = ClassificationService(AnalysisService(manager))
        image = [LoadedImage(Image.new("RGB", (40, 30), "green"), "PNG", "green")]
        [outcome] = run(service.classify(image, top_n=3))
        e2 = math.exp(2.0)
        assert [(p.class_id, p.name) for p in outcome.result.predictions] == [("1", "dog"), ("0", "cat"), ("2", "bird")]
        assert outcome.result.predictions[0].probability == pytest.approx(e2 / (e2 + 2), abs=1e-9)
        with pytest.raises(InvalidInput, match="English only"):
            run(service.classify(image, language="de"))
    finally:
        manager.shutdown()


def test_missing_checkpoint_fails_fast_naming_the_setting(classify_settings: Settings) -> None:
    manager = build_manager(settings_with(classify_settings, classifier_model_id="./no/such/classifier"))
    try:
        with pytest.raises(ModelUnavailable) as raised:
            run(
                ClassificationService(AnalysisService(manager)).classify(
                    [LoadedImage(Image.new("RGB", (8, 8)), "PNG", "x")]
                )
            )
        assert "CLASSIFIER_MODEL_ID" in raised.value.message
        assert manager.state("classifier") is ModelState.FAILED
        assert manager.state("florence2") is ModelState.NOT_LOADED  # backends load apart
    finally:
        manager.shutdown()


def test_model_work_shares_the_managers_bounded_queue(classify_settings: Settings) -> None:
    manager = build_manager(settings_with(classify_settings, max_queue_size=1))
    release = threading.Event()
    try:
        service = ClassificationService(AnalysisService(manager))
        manager.get("classifier")
        blocker = manager.submit(release.wait)  # occupies the one queue place
        with pytest.raises(Busy):
            run(service.classify([LoadedImage(Image.new("RGB", (8, 8)), "PNG", "x")]))
        release.set()
        blocker.result(timeout=30)
    finally:
        release.set()
        manager.shutdown()


# -- zero-shot with CLIP ------------------------------------------------------------------------------------
def clip_reference(manager: ModelManager, pil_images: list[Image.Image], prompts: list[str]) -> np.ndarray:
    """`logits_per_image` from the checkpoint's own forward pass."""
    backend = manager.get("zero_shot")
    processor, model = backend._processor, backend._model
    kwargs: dict[str, Any] = (
        {"padding": "max_length", "max_length": ZERO_SHOT_TEXT_LENGTH} if backend.sigmoid else {"padding": True}
    )
    inputs = processor(text=prompts, images=pil_images, return_tensors="pt", **kwargs)
    with torch.inference_mode():
        return model(**inputs).logits_per_image.double().numpy()


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_exclusive_zero_shot_equals_the_models_own_softmax(
    service: ClassificationService, manager: ModelManager, images: list
) -> None:
    outcomes = zero_shot(service, images, LABELS)
    reference = softmax_rows(clip_reference(manager, [i.image for i in images], [f"a photo of {x}" for x in LABELS]))
    for outcome, row in zip(outcomes, reference, strict=True):
        assert isinstance(outcome.result, ZeroShotResult)
        assert list(outcome.result.by_label) == LABELS
        assert list(outcome.result.probabilities) == pytest.approx(list(row), abs=2e-6)
        assert sum(outcome.result.probabilities) == pytest.approx(1.0, abs=1e-12)


def test_many_images_in_one_pass_match_one_at_a_time(service: ClassificationService, images: list) -> None:
    together = zero_shot(service, images, LABELS)
    alone = [zero_shot(service, [image], LABELS)[0] for image in images]
    for a, b in zip(together, alone, strict=True):
        assert list(a.result.probabilities) == pytest.approx(list(b.result.probabilities), abs=1e-5)


def test_clip_multi_label_is_each_label_against_its_negation(
    service: ClassificationService, manager: ModelManager, images: list
) -> None:
    outcomes = zero_shot(service, images, LABELS, multi_label=True)
    positive = clip_reference(manager, [i.image for i in images], [f"a photo of {x}" for x in LABELS])
    negative = clip_reference(
        manager, [i.image for i in images], [f"a photo of something that is not {x}" for x in LABELS]
    )
    expected = np.exp(positive) / (np.exp(positive) + np.exp(negative))
    for outcome, row in zip(outcomes, expected, strict=True):
        assert outcome.result.multi_label is True
        assert list(outcome.result.probabilities) == pytest.approx(list(row), abs=2e-6)


def test_template_averaging_through_the_model(
    service: ClassificationService, manager: ModelManager, images: list
) -> None:
    templates = ["a photo of {}", "a drawing of {}"]
    [outcome] = zero_shot(service, images[:1], LABELS, templates=templates)
    backend = manager.get("zero_shot")
    model, processor = backend._model, backend._processor
    with torch.inference_mode():
        text = processor.tokenizer([t.format(x) for x in LABELS for t in templates], padding=True, return_tensors="pt")
        t = model.get_text_features(**text).pooler_output
        t = torch.nn.functional.normalize(t, dim=-1).reshape(len(LABELS), len(templates), -1).mean(dim=1)
        t = torch.nn.functional.normalize(t, dim=-1)
        i = model.get_image_features(**processor(images=[images[0].image], return_tensors="pt")).pooler_output
        i = torch.nn.functional.normalize(i, dim=-1)
        logits = (model.logit_scale.exp() * i @ t.T).double().numpy()
    assert list(outcome.result.probabilities) == pytest.approx(list(softmax_rows(logits)[0]), abs=2e-6)
    assert outcome.result.templates == tuple(templates)


def test_categories_sum_their_phrasings(service: ClassificationService, images: list) -> None:
    labels = ["a thumbnail of a casual gaming stream", "a thumbnail showing violent content from a video game", "a cat"]
    categories = {labels[0]: "gaming", labels[1]: "gaming"}
    [outcome] = zero_shot(service, images[:1], labels, categories=categories)
    p = outcome.result.by_label
    assert outcome.result.categories == pytest.approx({"gaming": p[labels[0]] + p[labels[1]], "a cat": p["a cat"]})
    assert outcome.result.scores()[0][0] in {"gaming", "a cat"}


def test_text_embeddings_are_cached_per_label_and_templates(
    service: ClassificationService, manager: ModelManager, images: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = manager.get("zero_shot")
    backend.clear_cache()
    calls: list[list[str]] = []
    original = backend.text_embeddings

    def counting(prompts: list[str]) -> np.ndarray:
        calls.append(list(prompts))
        return original(prompts)

    monkeypatch.setattr(backend, "text_embeddings", counting)
    first = zero_shot(service, images, LABELS)
    second = zero_shot(service, images, LABELS)
    zero_shot(service, images, [*LABELS, "a bird"])
    assert calls == [[f"a photo of {x}" for x in LABELS], ["a photo of a bird"]]
    assert first[0].result.probabilities == second[0].result.probabilities


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"labels": []}, "missing_labels"),
        ({"labels": [f"l{i}" for i in range(101)]}, "too_many_labels"),
        ({"labels": ["a", "b"], "templates": ["no placeholder"]}, "invalid_template"),
        ({"labels": ["a", "b"], "templates": ["{} and {}"]}, "invalid_template"),
        ({"labels": ["a", "b"], "templates": ["a {photo} of {}"]}, "invalid_template"),
        ({"labels": ["a", "b"], "categories": {"c": "x"}}, "unknown_category_label"),
    ],
)
def test_zero_shot_input_is_checked_before_model_work(service: ClassificationService, kwargs: dict, code: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        zero_shot(service, [LoadedImage(Image.new("RGB", (8, 8)), "PNG", "x")], **kwargs)
    assert raised.value.code == code


# -- zero-shot with SigLIP ----------------------------------------------------------------------------------
def test_siglip_uses_its_sigmoid_and_bias(tmp_path: Path, classify_settings: Settings, images: list) -> None:
    directory = build_tiny_siglip(tmp_path / "siglip")
    manager = build_manager(settings_with(classify_settings, zero_shot_model_id=str(directory)))
    try:
        service = ClassificationService(AnalysisService(manager))
        multi = zero_shot(service, images, LABELS, multi_label=True)
        exclusive = zero_shot(service, images, LABELS)
        backend = manager.get("zero_shot")
        assert (backend.sigmoid, backend.logit_bias) == (True, pytest.approx(-1.5))
        logits = clip_reference(manager, [i.image for i in images], [f"a photo of {x}" for x in LABELS])
        for m, e, row in zip(multi, exclusive, logits, strict=True):
            assert list(m.result.probabilities) == pytest.approx(list(1 / (1 + np.exp(-row))), abs=2e-6)
            assert list(e.result.probabilities) == pytest.approx(list(softmax_rows(row[None])[0]), abs=2e-6)
    finally:
        manager.shutdown()


# -- registry and chart ----------------------------------------------------------------------------------
def test_registry_routes_tasks_to_backends(classify_settings: Settings) -> None:
    florence_registry = BackendRegistry.from_settings(classify_settings)
    assert florence_registry.names == ["florence2", "classifier", "zero_shot"]
    rapid_registry = BackendRegistry.from_settings(settings_with(classify_settings, ocr_backend="rapidocr"))
    assert rapid_registry.names[0] == "rapidocr"
    florence = build_manager(classify_settings, florence_registry)
    rapid = build_manager(classify_settings, rapid_registry)
    try:
        assert (florence.backend_name("<OCR>"), florence.backend_name("CLASSIFY"),
                florence.backend_name("ZERO_SHOT")) == ("florence2", "classifier", "zero_shot")  # fmt: skip
        assert rapid.backend_name("<OCR>") == rapid.backend_name("<OCR_WITH_REGION>") == "rapidocr"
        assert rapid.backend_name("<REGION_TO_OCR>") == rapid.backend_name("<OD>") == "florence2"
        with pytest.raises(UnknownTask):
            rapid.backend_name("<NOPE>")
    finally:
        florence.shutdown()
        rapid.shutdown()


def test_chart_is_a_png_whose_bars_follow_the_probabilities() -> None:
    def blue_pixels(scores: list[tuple[str, float]]) -> int:
        image = Image.open(io.BytesIO(probability_chart_png(scores, title="Top classes"))).convert("RGB")
        pixels = np.asarray(image).reshape(-1, 3).astype(int)
        return int((np.abs(pixels - [0x3B, 0x82, 0xF6]).sum(axis=1) < 30).sum())

    png = probability_chart_png([("tabby cat", 0.7), ("tiger cat", 0.2), ("a very long label " * 5, 0.1)])
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.width) == ("PNG", 640)
    assert blue_pixels([("a", 1.0)]) > 4 * blue_pixels([("a", 0.2)]) > 0
