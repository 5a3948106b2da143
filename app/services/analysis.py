"""Analyse images with one task: validation, batching through the manager, optional drawing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from app.core.config import Settings
from app.core.errors import AppError
from app.core.images import LoadedImage
from app.core.results import AnyResult, DetectionResult, TextResult, keep_min_score
from app.core.tasks import DEFAULT_CASCADE_CAPTION, TaskSpec, get_task, strip_markup, validate_task_inputs
from app.models.florence import FlorenceRequest
from app.models.manager import ModelManager
from app.models.registry import FLORENCE, BackendRegistry, build_manager


@dataclass(frozen=True)
class ImageOutcome:
    """What one image produced: a result, or the error that stopped it (the others still run)."""

    name: str
    result: AnyResult | None = None
    error: AppError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


class AnalysisService:
    def __init__(self, manager: ModelManager, registry: BackendRegistry | None = None) -> None:
        self.manager = manager
        # The registry decides which backend serves a task (OCR_BACKEND=rapidocr routes OCR to rapidocr).
        self.registry = registry or BackendRegistry.from_settings(manager.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> AnalysisService:
        """A standalone service (CLI, folder batches) with every registered backend, loaded lazily."""
        registry = BackendRegistry.from_settings(settings)
        return cls(build_manager(settings, registry), registry)

    def build_requests(
        self, images: Sequence[LoadedImage], task: str | TaskSpec, text: str | None, region: Sequence[float] | None
    ) -> list[FlorenceRequest | AppError]:
        """Validate once per image (a region may fit one image and not another)."""
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        requests: list[FlorenceRequest | AppError] = []
        for loaded in images:
            try:
                requests.append(FlorenceRequest.create(loaded.image, spec, text=text, region=region))
            except AppError as exc:
                requests.append(exc)
        return requests

    def analyze(
        self,
        images: Sequence[LoadedImage],
        task: str | TaskSpec,
        text: str | None = None,
        region: Sequence[float] | None = None,
        min_score: float | None = None,
    ) -> list[ImageOutcome]:
        """`min_score` drops the boxes, masks and text regions scored below it (see `keep_min_score`)."""
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        if spec.cascade:
            captions = self.analyze(images, caption_task(spec, text))
            grounding = GroundingStep(images, captions)
            return grounding.finish(spec, self._run(grounding.valid) if grounding.valid else [], min_score)
        requests = self.build_requests(images, task, text, region)
        valid = [r for r in requests if isinstance(r, FlorenceRequest)]
        results = iter(self._run(valid)) if valid else iter(())
        return _merge(images, requests, results, min_score)

    async def analyze_async(
        self,
        images: Sequence[LoadedImage],
        task: str | TaskSpec,
        text: str | None = None,
        region: Sequence[float] | None = None,
        min_score: float | None = None,
    ) -> list[ImageOutcome]:
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        if spec.cascade:
            captions = await self.analyze_async(images, caption_task(spec, text))
            grounding = GroundingStep(images, captions)
            return grounding.finish(spec, await self._run_async(grounding.valid) if grounding.valid else [], min_score)
        requests = self.build_requests(images, task, text, region)
        valid = [r for r in requests if isinstance(r, FlorenceRequest)]
        results = iter(await self._run_async(valid)) if valid else iter(())
        return _merge(images, requests, results, min_score)

    def _run(self, requests: Sequence[FlorenceRequest]) -> list[AnyResult]:
        name = self.registry.backend_for(requests[0].spec.token)
        if name == FLORENCE:
            return self.manager.analyze(requests)
        backend = self.manager.get(name)
        return self.manager.submit(lambda: backend.run(requests)).result()

    async def _run_async(self, requests: Sequence[FlorenceRequest]) -> list[AnyResult]:
        name = self.registry.backend_for(requests[0].spec.token)
        if name == FLORENCE:
            return await self.manager.analyze_async(requests)
        backend = await asyncio.to_thread(self.manager.get, name)
        results: list[AnyResult] = await self.manager.run_async(lambda: backend.run(requests))
        return results


def caption_task(spec: TaskSpec, text: str | None) -> TaskSpec:
    """The caption task a cascade starts from: the one its text names, else MORE_DETAILED_CAPTION."""
    return get_task(validate_task_inputs(spec, text, None) or DEFAULT_CASCADE_CAPTION)


class GroundingStep:
    """Caption + grounding's second step: ground each image's caption, then put caption and boxes together."""

    def __init__(self, images: Sequence[LoadedImage], captions: Sequence[ImageOutcome]) -> None:
        grounding = get_task("<CAPTION_TO_PHRASE_GROUNDING>")
        self.captions = captions
        self.requests: list[FlorenceRequest | None] = []
        for loaded, outcome in zip(images, captions, strict=True):
            text = outcome.result.text if isinstance(outcome.result, TextResult) else ""
            # A caption is model output: markup in it would be refused as user text, and it is not a phrase.
            phrase = strip_markup(text)[:1000]
            self.requests.append(FlorenceRequest.create(loaded.image, grounding, text=phrase) if phrase else None)
        self.valid = [r for r in self.requests if r is not None]

    def finish(self, spec: TaskSpec, results: Sequence[AnyResult], min_score: float | None) -> list[ImageOutcome]:
        grounded = iter(results)
        outcomes = []
        for outcome, request in zip(self.captions, self.requests, strict=True):
            if not isinstance(outcome.result, TextResult):
                outcomes.append(outcome)  # the caption failed: its error stands for the image
                continue
            found = next(grounded) if request is not None else None
            caption = outcome.result.text
            if not isinstance(found, DetectionResult):
                found = DetectionResult(spec.token, outcome.result.image_wh, scores=())
            combined = replace(found, task=spec.token, caption=caption)
            outcomes.append(ImageOutcome(outcome.name, result=keep_min_score(combined, min_score)))
        return outcomes


def _merge(
    images: Sequence[LoadedImage],
    requests: Sequence[FlorenceRequest | AppError],
    results: Iterator[AnyResult],
    min_score: float | None = None,
) -> list[ImageOutcome]:
    outcomes = []
    for loaded, request in zip(images, requests, strict=True):
        if isinstance(request, AppError):
            outcomes.append(ImageOutcome(loaded.name, error=request))
        else:
            outcomes.append(ImageOutcome(loaded.name, result=keep_min_score(next(results), min_score)))
    return outcomes
