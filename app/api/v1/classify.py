"""Classification routes: ImageNet (`/api/classify`, `/api/v1/classify`) and zero-shot (`/api/zero-shot`).

Same auth, rate limit (one unit per image), image intake (URL fetching with SSRF protection,
base64, uploads) and error shape as `/api/v1/analyze`. Every image gets its own entry in input
order; one that fails carries `{"error": {...}}` while the others succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.api.answers import CLIENT_CLOSED_REQUEST, finish_reports, reports_response, run_on_sources
from app.api.auth import Principal, PrincipalDep
from app.api.deps import ApiState, ApiStateDep, ServicesDep
from app.api.errors import app_error_response, error_responses
from app.api.intake import (
    ImageSource,
    check_image_count,
    form_fields,
    is_multipart,
    parse_body,
    read_uploads,
    require_json,
    source_from_json,
    source_from_text,
)
from app.api.v1.schemas_classify import (
    ClassifyForm,
    ClassifyRequest,
    SeedClassifyRequest,
    ZeroShotRequestBody,
    classify_body,
    seed_classify_body,
    zero_shot_body,
)
from app.core.classification_results import AnyClassification, ClassificationResult
from app.core.classify_math import RAW_LABEL_TEMPLATES
from app.core.config import Settings
from app.core.errors import AppError
from app.core.task_inputs import ZeroShotRequest
from app.core.tasks import CLASSIFY, ZERO_SHOT
from app.services.container import Services
from app.services.llm_analysis import ALIASES
from app.services.per_image import ImageReport
from app.services.ratelimit import work_cost

router = APIRouter(tags=["classification"])
SEED_TOP_K = 5  # what the replaced systems returned (the transformers pipeline default)
_ERRORS = error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503)
TopK = Annotated[int, Query(ge=1, le=1000, description="Labels per image")]
_JSON_ONLY = "Send the request as application/json (or multipart/form-data where files are accepted)."
Report = ImageReport
SEED_IMAGE_ERROR = "Failed to process image"
ANALYSIS_NOT_CONFIGURED = {
    "code": "analysis_not_configured",
    "message": "No analysis endpoint is configured on this server (ANALYSIS_API_URL).",
}


# -- POST /api/classify[/{model}] (seed shape) -----------------------------------------------------------
@router.post(
    "/api/classify",
    summary="Classify images (ImageNet); seed-compatible shape",
    responses=_ERRORS,
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
    responses=_ERRORS,
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
    services.classification.check_classify_input(top_k, "en")
    if not sources:
        return JSONResponse({"responses": []})
    services.limiter.hit(principal.sub, cost=work_cost(len(sources), [CLASSIFY]))
    alias = (model or "").strip().lower()
    explain = alias in ALIASES

    async def work() -> list[Report]:
        reports: list[Report] = await run_on_sources(
            api, sources, lambda images: services.classification.classify(images, top_k)
        )
        if explain:
            await _explain(services, alias, reports)
        return reports

    reports = await finish_reports(request, api, CLASSIFY.short_name, work())
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse({"responses": [_seed_entry(report) for report in reports]})


def _seed_entry(report: Report) -> dict[str, Any]:
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
    require_json(request, _JSON_ONLY)
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


async def _explain(services: Services, alias: str, reports: Sequence[Report]) -> None:
    """One analysis per classified image, concurrently. `analysis` is always there (empty when there is
    none, with `analysis_error` saying why), as the seed's clients read it unconditionally."""
    done = [(report, report.result) for report in reports if isinstance(report.result, ClassificationResult)]
    if not services.classification.analysis_enabled:
        for report, _ in done:
            report.extra.update(analysis="", analysis_error=ANALYSIS_NOT_CONFIGURED)
        return
    answers = await asyncio.gather(
        *(services.classification.explain(alias, result) for _, result in done), return_exceptions=True
    )
    for (report, _), answer in zip(done, answers, strict=True):
        if isinstance(answer, AppError):
            report.extra.update(analysis="", analysis_error=answer.to_dict())
        elif isinstance(answer, BaseException):
            raise answer
        else:
            report.extra["analysis"] = answer


# -- POST /api/v1/classify ---------------------------------------------------------------------------------
@router.post(
    "/api/v1/classify",
    summary="ImageNet classification with synset ids and names in English or German",
    responses=_ERRORS,
    openapi_extra=classify_body(),
)
async def classify_v1(request: Request, principal: PrincipalDep, services: ServicesDep, api: ApiStateDep) -> Response:
    """Images as in `/api/v1/analyze` (JSON `images` or multipart `files`), `numberofpredictions`
    (default 3) and `language` (`en`, `de`) → `{"results": [{"predictions": [{"class", "name",
    "probability"}], "duration", "repository", "version", "library", "model", ...}]}`."""
    sources, top_n, language = await _read_v1_input(request, api.settings)
    top_n, language = services.classification.check_classify_input(top_n, language)
    services.limiter.hit(principal.sub, cost=work_cost(len(sources), [CLASSIFY]))
    work: Awaitable[list[Report]] = run_on_sources(
        api, sources, lambda images: services.classification.classify(images, top_n, language)
    )
    reports = await finish_reports(request, api, CLASSIFY.short_name, work)
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return reports_response(reports, [report.to_dict() for report in reports])


async def _read_v1_input(request: Request, settings: Settings) -> tuple[list[ImageSource], int, str]:
    if is_multipart(request):
        async with request.form(max_fields=20) as form:
            params = parse_body(ClassifyForm, form_fields(form, "files"))
            sources = await read_uploads(form, settings, "files")
        return sources, params.numberofpredictions, params.language
    require_json(request, _JSON_ONLY)
    payload = parse_body(ClassifyRequest, await request.body())
    check_image_count(len(payload.images), settings)
    sources = [source_from_json(item, index, settings) for index, item in enumerate(payload.images)]
    return sources, payload.numberofpredictions, payload.language


# -- POST /api/zero-shot -----------------------------------------------------------------------------------
@router.post(
    "/api/zero-shot",
    summary="Zero-shot classification (CLIP/SigLIP) of images against your labels",
    responses=_ERRORS,
    openapi_extra=zero_shot_body(),
)
async def zero_shot(request: Request, principal: PrincipalDep, services: ServicesDep, api: ApiStateDep) -> Response:
    """`{"image_data": <base64>, "labels": [...]}` → `{"result": {label: probability}}`. Optional:
    `categories` (label → category, summed), `multi_label` (independent scores), `templates`
    (none by default: the labels as given; several are averaged) and `images` (a list) instead of
    `image_data` → `{"results": [...]}`."""
    require_json(request, _JSON_ONLY)
    payload = parse_body(ZeroShotRequestBody, await request.body())
    # The seed scored the labels as given; a template such as `a photo of {}` is an opt-in.
    templates = payload.templates or RAW_LABEL_TEMPLATES
    checked = ZeroShotRequest.create(payload.labels, payload.categories, payload.multi_label, templates)
    sources = _zero_shot_sources(payload, api.settings)
    services.limiter.hit(principal.sub, cost=work_cost(len(sources), [ZERO_SHOT]))

    work: Awaitable[list[Report]] = run_on_sources(
        api, sources, lambda images: services.classification.zero_shot(images, checked)
    )
    reports = await finish_reports(request, api, ZERO_SHOT.short_name, work)
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
