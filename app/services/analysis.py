"""Run any registered task on images: validate its input, route it to its backend, one outcome per image.

Every edge (API routes, jobs, the chat, the CLI, TaskBridge) runs tasks through this one service, so a
task added to the registry (`app/core/tasks.py`) with a backend is served everywhere. The cascaded
caption + grounding task is two model runs put together here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from app.core.classification_results import AnyTaskResult
from app.core.config import Settings
from app.core.errors import AppError
from app.core.imagenet import ImageNetLabels, imagenet_labels
from app.core.images import LoadedImage
from app.core.results import AnyResult, DetectionResult, TextResult, keep_min_score
from app.core.task_inputs import TaskInput
from app.core.tasks import DEFAULT_CASCADE_CAPTION, OutputKind, TaskSpec, get_task, strip_markup, validate_task_inputs
from app.models.base import TaskRequest
from app.models.manager import ModelManager
from app.models.registry import BackendRegistry, build_manager


@dataclass(frozen=True)
class ImageOutcome:
    """What one image produced: a result, or the error that stopped it (the others still run)."""

    name: str
    result: AnyTaskResult | None = None
    error: AppError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


class AnalysisService:
    def __init__(self, manager: ModelManager, labels: ImageNetLabels | None = None) -> None:
        self.manager = manager
        self.labels = labels or imagenet_labels(manager.settings.imagenet_names)

    @classmethod
    def from_settings(cls, settings: Settings) -> AnalysisService:
        """A standalone service (CLI, folder batches) with every registered backend, loaded lazily."""
        return cls(build_manager(settings, BackendRegistry.from_settings(settings)))

    def check_input(self, task: str | TaskSpec, task_input: TaskInput) -> tuple[TaskSpec, TaskInput]:
        """The task and its input as every edge checks them, before the rate limit and any model work."""
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        checked = task_input.checked(spec)
        if spec.output_kind is OutputKind.CLASSES:
            checked = replace(checked, language=self.labels.check_language(checked.language))
        return spec, checked

    def build_requests(
        self, images: Sequence[LoadedImage], spec: TaskSpec, task_input: TaskInput
    ) -> list[TaskRequest | AppError]:
        """Validate once per image (a region may fit one image and not another)."""
        requests: list[TaskRequest | AppError] = []
        for loaded in images:
            try:
                requests.append(
                    TaskRequest.create(loaded.image, spec, task_input.text, task_input.region, options=task_input)
                )
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
        *,
        options: TaskInput | None = None,
    ) -> list[ImageOutcome]:
        """Blocking, for worker threads (jobs, CLI). `options` carries what other tasks take (labels, top_n);
        `min_score` drops the boxes, masks and text regions scored below it (see `keep_min_score`)."""
        spec, task_input = self._input(task, text, region, min_score, options)
        if spec.cascade:
            captions = self.analyze(images, caption_task(spec, task_input.text))
            grounding = GroundingStep(images, captions)
            found = self.manager.run(grounding.valid) if grounding.valid else []
            return grounding.finish(spec, found, task_input.min_score)
        requests = self.build_requests(images, spec, task_input)
        valid = [r for r in requests if isinstance(r, TaskRequest)]
        results = iter(self.manager.run(valid)) if valid else iter(())
        return _merge(images, requests, results, task_input.min_score)

    async def analyze_async(
        self,
        images: Sequence[LoadedImage],
        task: str | TaskSpec,
        text: str | None = None,
        region: Sequence[float] | None = None,
        min_score: float | None = None,
        *,
        options: TaskInput | None = None,
    ) -> list[ImageOutcome]:
        spec, task_input = self._input(task, text, region, min_score, options)
        if spec.cascade:
            captions = await self.analyze_async(images, caption_task(spec, task_input.text))
            grounding = GroundingStep(images, captions)
            found = await self.manager.run_async(grounding.valid) if grounding.valid else []
            return grounding.finish(spec, found, task_input.min_score)
        requests = self.build_requests(images, spec, task_input)
        valid = [r for r in requests if isinstance(r, TaskRequest)]
        results = iter(await self.manager.run_async(valid)) if valid else iter(())
        return _merge(images, requests, results, task_input.min_score)

    def _input(
        self,
        task: str | TaskSpec,
        text: str | None,
        region: Sequence[float] | None,
        min_score: float | None,
        options: TaskInput | None,
    ) -> tuple[TaskSpec, TaskInput]:
        spec = task if isinstance(task, TaskSpec) else get_task(task)
        base = options or TaskInput()
        merged = replace(
            base,
            text=text if text is not None else base.text,
            region=region if region is not None else base.region,
            min_score=min_score if min_score is not None else base.min_score,
        )
        return spec, merged


def caption_task(spec: TaskSpec, text: str | None) -> TaskSpec:
    """The caption task a cascade starts from: the one its text names, else MORE_DETAILED_CAPTION."""
    return get_task(validate_task_inputs(spec, text, None) or DEFAULT_CASCADE_CAPTION)


class GroundingStep:
    """Caption + grounding's second step: ground each image's caption, then put caption and boxes together."""

    def __init__(self, images: Sequence[LoadedImage], captions: Sequence[ImageOutcome]) -> None:
        grounding = get_task("<CAPTION_TO_PHRASE_GROUNDING>")
        self.captions = captions
        self.requests: list[TaskRequest | None] = []
        for loaded, outcome in zip(images, captions, strict=True):
            text = outcome.result.text if isinstance(outcome.result, TextResult) else ""
            # A caption is model output: markup in it would be refused as user text, and it is not a phrase.
            phrase = strip_markup(text)[:1000]
            self.requests.append(TaskRequest.create(loaded.image, grounding, text=phrase) if phrase else None)
        self.valid = [r for r in self.requests if r is not None]

    def finish(self, spec: TaskSpec, results: Sequence[AnyTaskResult], min_score: float | None) -> list[ImageOutcome]:
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
    requests: Sequence[TaskRequest | AppError],
    results: Iterator[AnyTaskResult],
    min_score: float | None = None,
) -> list[ImageOutcome]:
    outcomes = []
    for loaded, request in zip(images, requests, strict=True):
        if isinstance(request, AppError):
            outcomes.append(ImageOutcome(loaded.name, error=request))
            continue
        result = next(results)
        if isinstance(result, AnyResult):  # scored instances (boxes, masks, text regions) can be filtered
            result = keep_min_score(result, min_score)
        outcomes.append(ImageOutcome(loaded.name, result=result))
    return outcomes
