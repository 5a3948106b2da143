"""Seed classification routes: ImageNet (`/api/classify`, `/api/classify/{model}`) and zero-shot (`/api/zero-shot`).

They answer in the shapes clients of the systems this app replaces already read (request shapes in
app/api/seed/classify_schemas.py), and run the registry's CLASSIFY and ZERO_SHOT tasks through the
same pipeline as `/api/v1/analyze`: same auth, rate limit (a unit per image), image intake (URL
fetching with SSRF protection, base64, uploads) and error codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.api.answers import CLIENT_CLOSED_REQUEST, finish_reports, reports_response, run_on_sources
from app.api.auth import Principal, PrincipalDep
from app.api.deps import ApiState, ApiStateDep, ServicesDep
from app.api.errors import app_error_response, error_responses
from app.api.intake import (
    JSON_ONLY,
    ImageSource,
    check_image_count,
    is_multipart,
    parse_body,
    read_uploads,
    require_json,
    source_from_json,
    source_from_text,
)
from app.api.seed.classify_schemas import SeedClassifyRequest, ZeroShotRequestBody, seed_classify_body, zero_shot_body
from app.core.classification_results import AnyClassification
from app.core.classify_math import RAW_LABEL_TEMPLATES
from app.core.config import Settings
from app.core.errors import AppError
from app.core.task_inputs import TaskFields, TaskInput
from app.core.tasks import CLASSIFY, ZERO_SHOT
from app.services.container import Services
from app.services.llm_analysis import ALIASES
from app.services.per_image import ImageReport, TaskRun

router = APIRouter(tags=["classification (seed-compatible)"])
ERRORS = error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503)
SEED_TOP_K = 5  # what the replaced systems returned (the transformers pipeline default)
TopK = Annotated[int, Query(ge=1, le=1000, description="Labels per image")]
SEED_IMAGE_ERROR = "Failed to process image"
ANALYSIS_NOT_CONFIGURED = {
    "code": "analysis_not_configured",
    "message": "No analysis endpoint is configured on this server (ANALYSIS_API_URL).",
}


# -- POST /api/classify[/{model}] --------------------------------------------------------------------------
@router.post(
    "/api/classify",
    summary="Classify images (ImageNet); seed-compatible shape",
    responses=ERRORS,
    openapi_extra=seed_classify_body(),
)
async def classify_seed(
    request: Request, principal: PrincipalDep, services: ServicesDep, api: ApiStateDep, top_k: TopK = SEED_TOP_K
) -> Response:
    """A JSON array of `{"url"}` / `{"file": <base64>}`, or multipart field `file` (one or more) →
    `{"responses": [{"classification": [{"label", "score"}]}]}` in input order."""
    return await _classify_seed(request, None, top_k, principal, services, api)


@router.post(
    "/api/classify/{model}",
    summary="Classify images and have an LLM (`llama` or `gemma`) comment on the result",
    responses=ERRORS,
    openapi_extra=seed_classify_body(),
)
async def classify_seed_with_analysis(
    request: Request,
    model: Annotated[str, Path(max_length=50, description="`llama` or `gemma` adds `analysis`; anything else: none")],
    principal: PrincipalDep,
    services: ServicesDep,
    api: ApiStateDep,
    top_k: TopK = SEED_TOP_K,
) -> Response:
    """Like `/api/classify`, and each classified entry has `analysis`: a paragraph from the LLM at
    ANALYSIS_API_URL, or `""` plus `analysis_error` when it failed or none is configured."""
    return await _classify_seed(request, model, top_k, principal, services, api)


async def _classify_seed(
    request: Request, model: str | None, top_k: int, principal: Principal, services: Services, api: ApiState
) -> Response:
    """The seed's answer, value for value: always 200 with one entry per image (an image that failed
    says so in its entry), `[]` in → `[]` out, and `analysis` on every entry of `/llama`, `/gemma`."""
    sources = await _read_seed_sources(request, api.settings)
    task_input = TaskInput(top_n=top_k)
    if not sources:
        services.analysis.check_input(CLASSIFY, task_input)  # nothing to run, so nothing to charge
        return JSONResponse({"responses": []})
    task_run = TaskRun.prepare(services.analysis, services.limiter, principal.sub, CLASSIFY, task_input, len(sources))
    alias = (model or "").strip().lower()

    async def work() -> list[ImageReport]:
        reports = await run_on_sources(api, services.analysis, task_run, sources)
        if alias in ALIASES:
            await _explain(services, alias, reports)
        return reports

    reports = await finish_reports(request, api, CLASSIFY.short_name, work())
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse({"responses": [_seed_entry(report) for report in reports]})


def _seed_entry(report: ImageReport) -> dict[str, Any]:
    if not isinstance(report.result, AnyClassification):
        failure = report.failure()
        # The seed's words, then ours: `code` says which of the failures it was.
        return {"name": report.name, "error": SEED_IMAGE_ERROR, "message": failure.message, "code": failure.code}
    scores = [{"label": label, "score": round(score, 6)} for label, score in report.result.scores()]
    return {"name": report.name, "classification": scores, **report.extra}


async def _read_seed_sources(request: Request, settings: Settings) -> list[ImageSource]:
    if is_multipart(request):
        async with request.form(max_fields=20) as form:
            return await read_uploads(form, settings, "file")
    require_json(request, JSON_ONLY)
    payload = parse_body(SeedClassifyRequest, await request.body())
    check_image_count(len(payload.root), settings)
    sources = []
    for index, item in enumerate(payload.root):
        name = f"images[{index}]"
        if item.url is not None:
            sources.append(ImageSource(name, url=item.url))
        else:
            sources.append(source_from_text(name, item.file or "", settings))
    return sources


async def _explain(services: Services, alias: str, reports: Sequence[ImageReport]) -> None:
    """One analysis per classified image, concurrently. `analysis` is always there (empty when there is
    none, with `analysis_error` saying why), as the seed's clients read it unconditionally."""
    done = [(report, report.result) for report in reports if isinstance(report.result, AnyClassification)]
    analyst = services.analyst
    if analyst is None:
        for report, _ in done:
            report.extra.update(analysis="", analysis_error=ANALYSIS_NOT_CONFIGURED)
        return
    answers = await asyncio.gather(
        *(analyst.analyze(alias, result.scores()) for _, result in done), return_exceptions=True
    )
    for (report, _), answer in zip(done, answers, strict=True):
        if isinstance(answer, AppError):
            report.extra.update(analysis="", analysis_error=answer.to_dict())
        elif isinstance(answer, BaseException):
            raise answer
        else:
            report.extra["analysis"] = answer


# -- POST /api/zero-shot -----------------------------------------------------------------------------------
@router.post(
    "/api/zero-shot",
    summary="Zero-shot classification (CLIP/SigLIP) of images against your labels",
    responses=ERRORS,
    openapi_extra=zero_shot_body(),
)
async def zero_shot(request: Request, principal: PrincipalDep, services: ServicesDep, api: ApiStateDep) -> Response:
    """`{"image_data": <base64>, "labels": [...]}` → `{"result": {label: probability}}`. Optional:
    `categories` (label → category, summed), `multi_label` (independent scores), `templates`
    (none by default: the labels as given; several are averaged) and `images` (a list) instead of
    `image_data` → `{"results": [...]}`."""
    require_json(request, JSON_ONLY)
    payload = parse_body(ZeroShotRequestBody, await request.body())
    fields = TaskFields(
        labels=payload.labels,
        categories=payload.categories,
        multi_label=payload.multi_label,
        templates=payload.templates or RAW_LABEL_TEMPLATES,  # the seed scored the labels as given
    )
    task_input = fields.task_input(ZERO_SHOT)  # bad labels or templates: 400 before the images are read
    sources = _zero_shot_sources(payload, api.settings)
    task_run = TaskRun.prepare(services.analysis, services.limiter, principal.sub, ZERO_SHOT, task_input, len(sources))
    reports = await finish_reports(
        request, api, ZERO_SHOT.short_name, run_on_sources(api, services.analysis, task_run, sources)
    )
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if payload.image_data is not None:
        (report,) = reports
        if report.result is None:
            return app_error_response(report.failure())
        return JSONResponse(report.result.to_dict())
    return reports_response(reports, [report.to_dict() for report in reports])


def _zero_shot_sources(payload: ZeroShotRequestBody, settings: Settings) -> list[ImageSource]:
    if payload.image_data is not None:
        return [source_from_text("image_data", payload.image_data, settings)]
    items = payload.images or []
    check_image_count(len(items), settings)
    return [source_from_json(item, index, settings) for index, item in enumerate(items)]
