"""What a job does: its typed parameters checked at submission, then run through the one per-image pipeline.

Parameters are checked when the job is submitted (a bad request never reaches the queue) exactly as the
synchronous routes check theirs (`AnalysisService.check_input`), and the result has the same per-image
shape as the matching synchronous route: `{"task", "results"}` for `analyze`, `{"results"}` for the
legacy kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core.errors import AppError, InvalidInput
from app.core.images import LoadedImage
from app.core.tasks import OutputKind
from app.jobs.params import AnalyzeParams, ClassifyParams, ZeroShotParams
from app.services.analysis import AnalysisService
from app.services.per_image import TaskRun, annotate

ImageOrError = LoadedImage | AppError
AnyParams = AnalyzeParams | ClassifyParams | ZeroShotParams


def check_params(analysis: AnalysisService, params: AnyParams) -> AnyParams:
    """`params` checked for its task and cleaned (labels deduplicated, default templates filled in)."""
    spec = params.spec()
    unexpected = isinstance(params, AnalyzeParams) and (params.top_n is not None or params.language is not None)
    if unexpected and spec.output_kind is not OutputKind.CLASSES:
        raise InvalidInput(f"{spec.name} takes no top_n or language.", code="unexpected_options")
    spec, checked = analysis.check_input(spec, params.task_input())
    if isinstance(params, ClassifyParams):
        return params.model_copy(update={"top_n": checked.top_n, "language": checked.language})
    labels = checked.labels
    update: dict[str, Any] = {}
    if labels is not None:
        update = {
            "labels": list(labels.labels),
            "categories": dict(labels.categories) if labels.categories is not None else None,
            "multi_label": labels.multi_label,
            "templates": list(labels.templates),
        }
    if isinstance(params, AnalyzeParams):
        update.update(task=spec.token, text=checked.text)
        if spec.output_kind is OutputKind.CLASSES:
            update.update(top_n=checked.top_n, language=checked.language)
    return params.model_copy(update=update)


def run_kind(
    analysis: AnalysisService, params: AnyParams, names: Sequence[str], images: Sequence[ImageOrError]
) -> tuple[dict[str, Any], AppError | None]:
    """The job's result, and the job's error when no image at all could be processed."""
    spec, checked = analysis.check_input(params.spec(), params.task_input())
    reports = TaskRun(spec, checked).run_sync(analysis, names, images)
    if isinstance(params, AnalyzeParams) and params.annotate:
        annotate(reports)
    entries = [report.to_dict() for report in reports]
    body: dict[str, Any] = {"results": entries}
    if isinstance(params, AnalyzeParams):
        body = {"task": spec.token, **body}
    if params.seed is not None:
        # The seed-compatible answers name the model that ran (`model`), read from the results themselves.
        body["model"] = next((r.result.run.model for r in reports if r.result is not None and r.result.run), None)
    errors = [e["error"] for e in entries if "error" in e]
    if entries and len(errors) == len(entries):
        first = errors[0]
        failure = AppError(first["message"], code=first["code"])
        failure.http_status = int(first.get("status", 500))
        return body, failure
    return body, None
