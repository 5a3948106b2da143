"""ImageNet and zero-shot classification for the edges that still ask for them by name, plus LLM comments.

Both are tasks of the registry (`CLASSIFY`, `ZERO_SHOT`) run by `AnalysisService` like any other; this
module only keeps the names the seed-compatible routes read (`classify`, `zero_shot`) and the optional
LLM analysis of a classification (`explain`).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.core.classification_results import AnyClassification
from app.core.errors import InvalidInput
from app.core.images import LoadedImage
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.core.tasks import CLASSIFY, ZERO_SHOT
from app.services.analysis import AnalysisService, ImageOutcome
from app.services.llm_analysis import LLMAnalyst


class ClassificationService:
    def __init__(self, analysis: AnalysisService, analyst: LLMAnalyst | None = None) -> None:
        self.analysis = analysis
        self.analyst = analyst
        self.labels = analysis.labels

    def check_classify_input(self, top_n: int, language: str) -> tuple[int, str]:
        _, checked = self.analysis.check_input(CLASSIFY, TaskInput(top_n=top_n, language=language))
        return checked.top_n, checked.language

    async def classify(self, images: Sequence[LoadedImage], top_n: int = 3, language: str = "en") -> list[ImageOutcome]:
        _, checked = self.analysis.check_input(CLASSIFY, TaskInput(top_n=top_n, language=language))
        return await self.analysis.analyze_async(images, CLASSIFY, options=checked)

    def classify_sync(self, images: Sequence[LoadedImage], top_n: int = 3, language: str = "en") -> list[ImageOutcome]:
        """For worker threads (jobs, CLI): blocks until the results are in."""
        _, checked = self.analysis.check_input(CLASSIFY, TaskInput(top_n=top_n, language=language))
        return self.analysis.analyze(images, CLASSIFY, options=checked)

    async def zero_shot(self, images: Sequence[LoadedImage], request: ZeroShotRequest) -> list[ImageOutcome]:
        return await self.analysis.analyze_async(images, ZERO_SHOT, options=TaskInput(labels=request))

    def zero_shot_sync(self, images: Sequence[LoadedImage], request: ZeroShotRequest) -> list[ImageOutcome]:
        """For worker threads (jobs, CLI): blocks until the results are in."""
        return self.analysis.analyze(images, ZERO_SHOT, options=TaskInput(labels=request))

    # -- LLM analysis --------------------------------------------------------------------------------
    @property
    def analysis_enabled(self) -> bool:
        return self.analyst is not None

    async def explain(self, alias: str, result: AnyClassification) -> str:
        """A paragraph about `result` from the analysis model `alias` (raises `AnalysisFailed`)."""
        if self.analyst is None:
            raise InvalidInput("LLM analysis is not configured (ANALYSIS_API_URL).", code="analysis_unavailable")
        return await self.analyst.analyze(alias, result.scores())
