"""ImageNet classification and zero-shot classification for the API, chat and jobs.

Input is validated before any model work; model work runs on the manager's inference thread
(`run_async`, sharing its bounded queue) with every image of a request in one forward pass; the
probability maths is `app.core.classify_math`. Each image gets its own outcome, like `AnalysisService`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from app.core import classify_math as cm
from app.core.classification_results import (
    ClassificationResult,
    RunInfo,
    ZeroShotResult,
    predictions_from_probabilities,
)
from app.core.errors import AppError, InvalidInput
from app.core.imagenet import ImageNetLabels, imagenet_labels
from app.core.images import LoadedImage
from app.models.classifier import ClassifierBackend
from app.models.manager import ModelManager
from app.models.zero_shot import ZeroShotBackend
from app.services.llm_analysis import LLMAnalyst

T = TypeVar("T")
AnyClassification = ClassificationResult | ZeroShotResult

MAX_TOP_N = 1000
MAX_LABELS = 100
MAX_LABEL_CHARS = 200
MAX_TEMPLATES = 16
MAX_TEMPLATE_CHARS = 200


@dataclass(frozen=True)
class ClassificationOutcome:
    """What one image produced: a result, or the error that stopped it."""

    name: str
    result: AnyClassification | None = None
    error: AppError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class ZeroShotRequest:
    """Validated zero-shot input: labels in order, label → category, prompt templates."""

    labels: tuple[str, ...]
    categories: Mapping[str, str] | None
    multi_label: bool
    templates: tuple[str, ...]

    @classmethod
    def create(
        cls,
        labels: Sequence[str],
        categories: Mapping[str, str] | None = None,
        multi_label: bool = False,
        templates: Sequence[str] | None = None,
    ) -> ZeroShotRequest:
        cleaned = tuple(dict.fromkeys(label.strip() for label in labels if label and label.strip()))
        if not cleaned:
            raise InvalidInput("Give at least one label.", code="missing_labels")
        if len(cleaned) > MAX_LABELS:
            raise InvalidInput(f"At most {MAX_LABELS} labels per request.", code="too_many_labels")
        if any(len(label) > MAX_LABEL_CHARS for label in cleaned):
            raise InvalidInput(f"Labels are limited to {MAX_LABEL_CHARS} characters.", code="label_too_long")
        return cls(
            labels=cleaned,
            categories=_check_categories(categories, cleaned) if categories else None,
            multi_label=multi_label,
            templates=_check_templates(templates),
        )


def _check_categories(categories: Mapping[str, str], labels: Sequence[str]) -> dict[str, str]:
    cleaned = {str(label).strip(): str(category).strip() for label, category in categories.items()}
    unknown = [label for label in cleaned if label not in labels]
    if unknown:
        raise InvalidInput(
            f"categories name labels that are not in `labels`: {', '.join(repr(u[:40]) for u in unknown[:5])}.",
            code="unknown_category_label",
        )
    if any(not category or len(category) > MAX_LABEL_CHARS for category in cleaned.values()):
        raise InvalidInput(f"Category names must have 1 to {MAX_LABEL_CHARS} characters.", code="invalid_category")
    return cleaned


def _check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    if not templates:
        return cm.DEFAULT_TEMPLATES
    cleaned = tuple(dict.fromkeys(t.strip() for t in templates if t and t.strip()))
    if not cleaned or len(cleaned) > MAX_TEMPLATES:
        raise InvalidInput(f"Give 1 to {MAX_TEMPLATES} templates.", code="invalid_templates")
    for template in cleaned:
        # Exactly one `{}` and no other braces: str.format must place the label and nothing else.
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise InvalidInput(
                f"Template {template[:60]!r} must contain `{{}}` exactly once (where the label goes) "
                "and no other braces.",
                code="invalid_template",
            )
        if len(template) > MAX_TEMPLATE_CHARS:
            raise InvalidInput(f"Templates are limited to {MAX_TEMPLATE_CHARS} characters.", code="invalid_template")
    return cleaned


@dataclass(frozen=True)
class _Job:
    """Model work for a batch of images: which backend it needs and what to do with it."""

    backend: str
    images: Sequence[LoadedImage]
    work: Callable[[Any], list[ClassificationOutcome]]


class ClassificationService:
    def __init__(
        self,
        manager: ModelManager,
        analyst: LLMAnalyst | None = None,
        labels: ImageNetLabels | None = None,
    ) -> None:
        self.manager = manager
        self.analyst = analyst
        self.labels = labels or imagenet_labels()

    # -- ImageNet classification ---------------------------------------------------------------------
    def check_classify_input(self, top_n: int, language: str) -> tuple[int, str]:
        if not 1 <= top_n <= MAX_TOP_N:
            raise InvalidInput(f"The number of predictions must be 1 to {MAX_TOP_N}.", code="invalid_top_n")
        return top_n, self.labels.check_language(language)

    async def classify(
        self, images: Sequence[LoadedImage], top_n: int = 3, language: str = "en"
    ) -> list[ClassificationOutcome]:
        return await self._run_async(self._classify_job(images, top_n, language))

    def classify_sync(
        self, images: Sequence[LoadedImage], top_n: int = 3, language: str = "en"
    ) -> list[ClassificationOutcome]:
        """For worker threads (jobs, CLI): blocks until the results are in."""
        return self._run_sync(self._classify_job(images, top_n, language))

    def _classify_job(self, images: Sequence[LoadedImage], top_n: int, language: str) -> _Job:
        top_n, language = self.check_classify_input(top_n, language)
        return _Job("classifier", images, lambda backend: self._classify_work(backend, images, top_n, language))

    def _classify_work(
        self, backend: ClassifierBackend, images: Sequence[LoadedImage], top_n: int, language: str
    ) -> list[ClassificationOutcome]:
        logits, seconds = _timed(lambda: backend.logits([loaded.image for loaded in images]))
        class_ids, names = self._label_table(backend, language)
        run = RunInfo(duration=seconds, model=backend.model_id, library=backend.library)
        outcomes = []
        for loaded, row in zip(images, cm.softmax(logits, axis=-1), strict=True):
            predictions = predictions_from_probabilities(cm.top_n(row, top_n), class_ids, names)
            result = ClassificationResult(predictions, loaded.image_wh, language, run)
            outcomes.append(ClassificationOutcome(loaded.name, result=result))
        return outcomes

    def _label_table(self, backend: ClassifierBackend, language: str) -> tuple[Sequence[str], Sequence[str]]:
        if backend.imagenet:
            return self.labels.synsets, self.labels.names[language]
        if language != "en":
            raise InvalidInput(
                f"The classifier {backend.model_id!r} is not an ImageNet-1k model; its labels exist in English "
                "only (available: en).",
                code="unknown_language",
            )
        count = len(backend.id2label)
        return [str(i) for i in range(count)], [backend.id2label.get(i, str(i)) for i in range(count)]

    # -- zero-shot (input checked by `ZeroShotRequest.create`) --------------------------------------------
    async def zero_shot(self, images: Sequence[LoadedImage], request: ZeroShotRequest) -> list[ClassificationOutcome]:
        return await self._run_async(self._zero_shot_job(images, request))

    def zero_shot_sync(self, images: Sequence[LoadedImage], request: ZeroShotRequest) -> list[ClassificationOutcome]:
        """For worker threads (jobs, CLI): blocks until the results are in."""
        return self._run_sync(self._zero_shot_job(images, request))

    def _zero_shot_job(self, images: Sequence[LoadedImage], request: ZeroShotRequest) -> _Job:
        return _Job("zero_shot", images, lambda backend: self._zero_shot_work(backend, images, request))

    # -- running on the manager's inference thread ---------------------------------------------------------
    async def _run_async(self, job: _Job) -> list[ClassificationOutcome]:
        if not job.images:
            return []
        backend = await asyncio.to_thread(self.manager.get, job.backend)
        return await self.manager.run_async(lambda: job.work(backend))

    def _run_sync(self, job: _Job) -> list[ClassificationOutcome]:
        if not job.images:
            return []
        backend = self.manager.get(job.backend)
        return self.manager.submit(lambda: job.work(backend)).result()

    def _zero_shot_work(
        self, backend: ZeroShotBackend, images: Sequence[LoadedImage], request: ZeroShotRequest
    ) -> list[ClassificationOutcome]:
        probabilities, seconds = _timed(lambda: zero_shot_probabilities(backend, images, request))
        run = RunInfo(duration=seconds, model=backend.model_id, library=backend.library)
        outcomes = []
        for loaded, row in zip(images, probabilities, strict=True):
            by_label = dict(zip(request.labels, (float(p) for p in row), strict=True))
            categories = None
            if request.categories is not None:
                combine = cm.category_max if request.multi_label else cm.category_sums
                categories = combine(by_label, request.categories)
            result = ZeroShotResult(
                labels=request.labels,
                probabilities=tuple(by_label.values()),
                image_wh=loaded.image_wh,
                multi_label=request.multi_label,
                run=run,
                categories=categories,
                templates=request.templates,
            )
            outcomes.append(ClassificationOutcome(loaded.name, result=result))
        return outcomes

    # -- LLM analysis --------------------------------------------------------------------------------
    @property
    def analysis_enabled(self) -> bool:
        return self.analyst is not None

    async def explain(self, alias: str, result: AnyClassification) -> str:
        """A paragraph about `result` from the analysis model `alias` (raises `AnalysisFailed`)."""
        if self.analyst is None:
            raise InvalidInput("LLM analysis is not configured (ANALYSIS_API_URL).", code="analysis_unavailable")
        return await self.analyst.analyze(alias, result.scores())


def zero_shot_probabilities(
    backend: ZeroShotBackend, images: Sequence[LoadedImage], request: ZeroShotRequest
) -> np.ndarray:
    """`(images, labels)` probabilities: softmax, SigLIP sigmoid, or CLIP label-vs-negation."""
    image_vectors = backend.image_embeddings([loaded.image for loaded in images])
    label_vectors = backend.label_embeddings(request.labels, request.templates)
    logits = cm.similarity_logits(image_vectors, label_vectors, backend.logit_scale, backend.logit_bias)
    if not request.multi_label:
        return cm.exclusive_probabilities(logits)
    if backend.sigmoid:
        return cm.sigmoid_probabilities(logits)
    negations = [cm.negated(label) for label in request.labels]
    negation_vectors = backend.label_embeddings(negations, request.templates)
    negation_logits = cm.similarity_logits(image_vectors, negation_vectors, backend.logit_scale)
    return cm.negation_probabilities(logits, negation_logits)


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started
