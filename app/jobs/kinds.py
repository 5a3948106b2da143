"""What each kind of job does: validated parameters in, the services' answer out as JSON.

Kinds: `analyze` (a Florence-2 task), `classify` (ImageNet top-N) and `zero-shot` (labels you give).
Parameters are validated when the job is submitted (a bad request never reaches the queue) and the
result has the same per-image shape as the matching synchronous API route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.core.errors import AppError, InvalidInput
from app.core.geometry import XYXY
from app.core.images import LoadedImage
from app.core.task_inputs import ZeroShotRequest
from app.core.tasks import TaskSpec, get_task, validate_task_inputs
from app.services.analysis import ImageOutcome as ClassificationOutcome
from app.services.classification import ClassificationService
from app.services.container import Services
from app.services.per_image import ImageReport, annotate, merge_outcomes

ANALYZE, CLASSIFY, ZERO_SHOT = "analyze", "classify", "zero-shot"
KINDS = (ANALYZE, CLASSIFY, ZERO_SHOT)
_ALIASES = {"zero_shot": ZERO_SHOT, "zeroshot": ZERO_SHOT, "classification": CLASSIFY, "classify-image": CLASSIFY}

ImageOrError = LoadedImage | AppError


def normalize_kind(value: object) -> str:
    name = str(value).strip().lower() if isinstance(value, str) else ""
    name = _ALIASES.get(name, name)
    if name not in KINDS:
        raise InvalidInput(f"'kind' must be one of {', '.join(KINDS)}.", code="unknown_job_kind")
    return name


def analyze_params(
    task: str, text: str | None, region: XYXY | None, annotate: bool = False, min_score: float | None = None
) -> dict[str, Any]:
    """Checked like the analyze route: the task exists and gets the text or region it needs."""
    spec = get_task(task)
    checked_text = validate_task_inputs(spec, text, region)
    params: dict[str, Any] = {
        "task": spec.token,
        "text": checked_text,
        "region": list(region) if region else None,
        "annotate": annotate,
    }
    if min_score is not None:
        params["min_score"] = min_score
    return params


def classify_params(service: ClassificationService, top_n: int, language: str) -> dict[str, Any]:
    """Checked by the classification service itself (range of `top_n`, known label language)."""
    checked_top_n, checked_language = service.check_classify_input(top_n, language)
    return {"top_n": checked_top_n, "language": checked_language}


def zero_shot_params(
    labels: Sequence[str],
    categories: Mapping[str, str] | None = None,
    multi_label: bool = False,
    templates: Sequence[str] | None = None,
) -> dict[str, Any]:
    request = ZeroShotRequest.create(labels, categories, multi_label, templates)
    return {
        "labels": list(request.labels),
        "categories": dict(request.categories) if request.categories is not None else None,
        "multi_label": request.multi_label,
        "templates": list(request.templates),
    }


def job_tasks(kind: str, params: Mapping[str, Any]) -> tuple[TaskSpec, ...]:
    """The tasks a job runs on each image (for its rate-limit cost)."""
    if kind == ANALYZE:
        return (get_task(str(params["task"])),)
    return (get_task("CLASSIFY" if kind == CLASSIFY else "ZERO_SHOT"),)


def scores_by_label(entry: dict[str, Any]) -> dict[str, float]:
    """label → probability from one image's zero-shot answer (`{"result": {label: p}}`)."""
    result = entry.get("result")
    return {str(k): float(v) for k, v in result.items()} if isinstance(result, dict) else {}


def run_kind(
    services: Services, kind: str, params: dict[str, Any], names: Sequence[str], images: Sequence[ImageOrError]
) -> tuple[dict[str, Any], AppError | None]:
    """The job's result, and the job's error when no image at all could be processed."""
    if kind == ANALYZE:
        entries = _run_analyze(services, params, names, images)
    elif kind in (CLASSIFY, ZERO_SHOT):
        entries = _run_classification(services, kind, params, names, images)
    else:
        raise InvalidInput(f"Unknown job kind {kind!r}.", code="unknown_job_kind")
    errors = [e["error"] for e in entries if "error" in e]
    body: dict[str, Any] = {"results": entries}
    if kind == ANALYZE:
        body = {"task": params["task"], **body}
    if entries and len(errors) == len(entries):
        first = errors[0]
        failure = AppError(first["message"], code=first["code"])
        failure.http_status = int(first.get("status", 500))
        return body, failure
    return body, None


def _decoded(images: Sequence[ImageOrError]) -> list[LoadedImage]:
    return [image for image in images if isinstance(image, LoadedImage)]


def _run_analyze(
    services: Services, params: dict[str, Any], names: Sequence[str], images: Sequence[ImageOrError]
) -> list[dict[str, Any]]:
    loaded = _decoded(images)
    region = tuple(params["region"]) if params.get("region") else None
    min_score = params.get("min_score")
    outcomes = (
        services.analysis.analyze(loaded, params["task"], params.get("text"), region, min_score) if loaded else []
    )
    reports: list[ImageReport] = merge_outcomes(names, images, outcomes)
    if params.get("annotate"):
        annotate(reports)
    return [report.to_dict() for report in reports]


def _run_classification(
    services: Services, kind: str, params: dict[str, Any], names: Sequence[str], images: Sequence[ImageOrError]
) -> list[dict[str, Any]]:
    loaded = _decoded(images)
    outcomes: list[ClassificationOutcome] = []
    if loaded and kind == CLASSIFY:
        outcomes = services.classification.classify_sync(loaded, params["top_n"], params["language"])
    elif loaded:
        request = ZeroShotRequest.create(
            params["labels"], params.get("categories"), params["multi_label"], params.get("templates")
        )
        outcomes = services.classification.zero_shot_sync(loaded, request)
    return [report.to_dict() for report in merge_outcomes(names, images, outcomes)]
