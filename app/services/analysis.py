"""Analyse images with one task: validation, batching through the manager, optional drawing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from app.config import Settings
from app.errors import AppError
from app.images import LoadedImage
from app.models.florence import FlorenceRequest
from app.models.manager import ModelManager
from app.models.registry import FLORENCE, BackendRegistry, build_manager
from app.results import AnyResult, keep_min_score
from app.tasks import TaskSpec, get_task


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
