"""The one per-image pipeline every edge follows: read → validate → charge → run → collect → respond.

An edge (an API route, a job, the chat, TaskBridge) reads its request, then `TaskRun.prepare` checks the
task's input and charges the rate limit (one unit per model run on one image) before any image is
fetched or decoded. The edge decodes its images; `TaskRun.run` sends those that decoded to the model as
one batch and merges the outcomes back in input order, so each image answers with its result, or with
`{"name", "error"}` while the others succeed. Only reading and responding differ per edge.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core.classification_results import AnyTaskResult
from app.core.errors import AppError, InferenceError, error_entry
from app.core.images import LoadedImage
from app.core.results import AnyResult
from app.core.task_inputs import TaskInput
from app.core.tasks import TaskSpec
from app.services.analysis import AnalysisService, ImageOutcome
from app.services.ratelimit import RateLimiter, work_cost


@dataclass
class ImageReport:
    """What became of one input image."""

    name: str
    image: LoadedImage | None = None
    result: AnyTaskResult | None = None
    error: AppError | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # added to a success entry: annotated_png, analysis

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return self.error_entry()
        return {"name": self.name, **self.result.to_dict(), **self.extra}

    def error_entry(self) -> dict[str, Any]:
        return error_entry(self.name, self.failure())

    def failure(self) -> AppError:
        """The error this image answers with when it has no result."""
        return self.error or InferenceError("No result.")


def merge_outcomes(
    names: Sequence[str], items: Sequence[LoadedImage | AppError], outcomes: Iterable[ImageOutcome]
) -> list[ImageReport]:
    """`outcomes` belong to the items that decoded, in order; an item that did not keeps its error."""
    remaining = iter(outcomes)
    reports: list[ImageReport] = []
    for name, item in zip(names, items, strict=True):
        if isinstance(item, AppError):
            reports.append(ImageReport(name, error=item))
            continue
        outcome = next(remaining, None)
        if outcome is None:  # the service answered fewer images than it was given
            reports.append(ImageReport(name, image=item))
        else:
            reports.append(ImageReport(name, image=item, result=outcome.result, error=outcome.error))
    return reports


def annotate(reports: Sequence[ImageReport]) -> None:
    """Draw each result on its image and attach the picture as base64 PNG (`annotated_png`)."""
    from app.rendering.drawing import Annotator, to_png_bytes  # matplotlib and fonts: only when someone asks

    annotator = Annotator()
    for report in reports:
        if report.image is not None and isinstance(report.result, AnyResult):
            drawn = annotator.annotate(report.image.image, report.result)
            report.extra["annotated_png"] = base64.b64encode(to_png_bytes(drawn)).decode("ascii")


@dataclass(frozen=True)
class TaskRun:
    """One task with its checked input, validated and paid for before any image is read."""

    spec: TaskSpec
    task_input: TaskInput

    @classmethod
    def prepare(
        cls,
        analysis: AnalysisService,
        limiter: RateLimiter,
        identity: str,
        task: str | TaskSpec,
        task_input: TaskInput,
        image_count: int,
    ) -> TaskRun:
        """Check the input (4xx before any cost), then charge `identity` for `image_count` images."""
        spec, checked = analysis.check_input(task, task_input)
        limiter.hit(identity, cost=max(1, work_cost(image_count, [spec])))
        return cls(spec, checked)

    async def run(
        self, analysis: AnalysisService, names: Sequence[str], items: Sequence[LoadedImage | AppError]
    ) -> list[ImageReport]:
        """The images that decoded in one batch; every item answers in input order."""
        images = [item for item in items if isinstance(item, LoadedImage)]
        outcomes = await analysis.analyze_async(images, self.spec, options=self.task_input) if images else []
        return merge_outcomes(names, items, outcomes)

    def run_sync(
        self, analysis: AnalysisService, names: Sequence[str], items: Sequence[LoadedImage | AppError]
    ) -> list[ImageReport]:
        """`run` for worker threads (jobs, TaskBridge): blocks until every result is in."""
        images = [item for item in items if isinstance(item, LoadedImage)]
        outcomes = analysis.analyze(images, self.spec, options=self.task_input) if images else []
        return merge_outcomes(names, items, outcomes)
