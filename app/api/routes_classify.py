"""Classification routes: ImageNet (`/api/classify`, `/api/v1/classify`) and zero-shot (`/api/zero-shot`).

Same auth, rate limit (one unit per image), image intake (URL fetching with SSRF protection,
base64, uploads) and error shape as `/api/v1/analyze`. Every image gets its own entry in input
order; one that fails carries `{"error": {...}}` while the others succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from app.api.auth import Principal, require_principal
from app.api.deps import ApiState, get_api_state, get_services
from app.api.disconnect import run_unless_disconnected
from app.api.errors import app_error_response, error_responses
from app.api.intake import (
    ImageSource,
    check_image_count,
    decode_base64,
    decode_data_url,
    load_sources,
    source_from_json,
    source_from_upload,
)
from app.api.schemas_classify import (
    ClassifyForm,
    ClassifyRequest,
    SeedClassifyRequest,
    ZeroShotRequestBody,
    classify_body,
    seed_classify_body,
    zero_shot_body,
)
from app.classification_results import ClassificationResult
from app.config import Settings
from app.errors import AppError, InferenceError, UnsupportedMediaType
from app.images import ImageLimits, LoadedImage
from app.models.classifier import CLASSIFY_TASK
from app.models.zero_shot import ZERO_SHOT_TASK
from app.services.classification import AnyClassification, ClassificationOutcome, ZeroShotRequest
from app.services.container import Services
from app.services.llm_analysis import ALIASES

ModelT = TypeVar("ModelT", bound=BaseModel)
router = APIRouter(tags=["classification"])
CLIENT_CLOSED_REQUEST = 499
SEED_TOP_K = 5  # what the replaced systems returned (the transformers pipeline default)
_ERRORS = error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503)


@dataclass
class _Report:
    name: str
    result: AnyClassification | None = None
    error: AppError | None = None
    analysis: str | None = None
    analysis_error: AppError | None = None

    def error_dict(self) -> dict[str, Any]:
        error = self.error or InferenceError("No result.")
        return {"name": self.name, "error": {**error.to_dict(), "status": error.http_status}}


# -- POST /api/classify[/{model}] (seed shape) -----------------------------------------------------------
@router.post(
    "/api/classify",
    summary="Classify images (ImageNet); seed-compatible shape",
    responses=_ERRORS,
    openapi_extra=seed_classify_body(),
)
async def classify_seed(
    request: Request,
    top_k: int = Query(SEED_TOP_K, ge=1, le=1000, description="Labels per image"),
    principal: Principal = Depends(require_principal),
    services: Services = Depends(get_services),
    api: ApiState = Depends(get_api_state),
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
    model: str = Path(max_length=50, description="`llama` or `gemma` adds `analysis`; anything else: none"),
    top_k: int = Query(SEED_TOP_K, ge=1, le=1000, description="Labels per image"),
    principal: Principal = Depends(require_principal),
    services: Services = Depends(get_services),
    api: ApiState = Depends(get_api_state),
) -> Response:
    """Like `/api/classify`; with ANALYSIS_API_URL set, each entry also has `analysis` (a paragraph),
    or `analysis_error` when the analysis service failed (the classification is still returned)."""
    return await _classify_seed(request, model, top_k, principal, services, api)


async def _classify_seed(
    request: Request, model: str | None, top_k: int, principal: Principal, services: Services, api: ApiState
) -> Response:
    sources = await _read_seed_sources(request, api.settings)
    services.classification.check_classify_input(top_k, "en")
    services.limiter.hit(principal.sub, cost=len(sources))
    alias = (model or "").strip().lower()
    explain = alias in ALIASES and services.classification.analysis_enabled

    async def work() -> list[_Report]:
        reports = await _run(services, api, sources, lambda images: services.classification.classify(images, top_k))
        if explain:
            await _explain(services, alias, reports)
        return reports

    reports = await _unless_disconnected(request, work())
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    _count(api, CLASSIFY_TASK, reports)
    entries = [_seed_entry(report) for report in reports]
    return _respond(reports, {"responses": entries}, "responses")


def _seed_entry(report: _Report) -> dict[str, Any]:
    if report.result is None:
        return report.error_dict()
    entry: dict[str, Any] = {
        "name": report.name,
        "classification": [{"label": label, "score": round(score, 6)} for label, score in report.result.scores()],
    }
    if report.analysis is not None:
        entry["analysis"] = report.analysis
    if report.analysis_error is not None:
        entry["analysis_error"] = report.analysis_error.to_dict()
    return entry


async def _read_seed_sources(request: Request, settings: Settings) -> list[ImageSource]:
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        async with request.form(max_fields=20) as form:
            return await _read_uploads(form, settings, "file")
    _require_json(media_type)
    payload = _parse_json(SeedClassifyRequest, await request.body())
    check_image_count(len(payload.root), settings)
    sources = []
    for index, item in enumerate(payload.root):
        name = f"images[{index}]"
        if item.url is not None:
            sources.append(ImageSource(name, url=item.url))
        else:
            sources.append(_decoded(name, item.file or "", settings))
    return sources


async def _explain(services: Services, alias: str, reports: Sequence[_Report]) -> None:
    """One analysis per classified image, concurrently; a failure stays with its image."""
    done = [(report, report.result) for report in reports if isinstance(report.result, ClassificationResult)]
    answers = await asyncio.gather(
        *(services.classification.explain(alias, result) for _, result in done), return_exceptions=True
    )
    for (report, _), answer in zip(done, answers, strict=True):
        if isinstance(answer, AppError):
            report.analysis_error = answer
        elif isinstance(answer, BaseException):
            raise answer
        else:
            report.analysis = answer


# -- POST /api/v1/classify ---------------------------------------------------------------------------------
@router.post(
    "/api/v1/classify",
    summary="ImageNet classification with synset ids and names in English or German",
    responses=_ERRORS,
    openapi_extra=classify_body(),
)
async def classify_v1(
    request: Request,
    principal: Principal = Depends(require_principal),
    services: Services = Depends(get_services),
    api: ApiState = Depends(get_api_state),
) -> Response:
    """Images as in `/api/v1/analyze` (JSON `images` or multipart `files`), `numberofpredictions`
    (default 3) and `language` (`en`, `de`) → `{"results": [{"predictions": [{"class", "name",
    "probability"}], "duration", "repository", "version", "library", "model", ...}]}`."""
    sources, top_n, language = await _read_v1_input(request, api.settings)
    top_n, language = services.classification.check_classify_input(top_n, language)
    services.limiter.hit(principal.sub, cost=len(sources))
    reports = await _unless_disconnected(
        request,
        _run(services, api, sources, lambda images: services.classification.classify(images, top_n, language)),
    )
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    _count(api, CLASSIFY_TASK, reports)
    results = [_result_entry(report) for report in reports]
    return _respond(reports, {"results": results}, "results")


async def _read_v1_input(request: Request, settings: Settings) -> tuple[list[ImageSource], int, str]:
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        async with request.form(max_fields=20) as form:
            fields = {key: value for key, value in form.multi_items() if key != "files" and isinstance(value, str)}
            params = _parse_fields(ClassifyForm, fields)
            sources = await _read_uploads(form, settings, "files")
        return sources, params.numberofpredictions, params.language
    _require_json(media_type)
    payload = _parse_json(ClassifyRequest, await request.body())
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
async def zero_shot(
    request: Request,
    principal: Principal = Depends(require_principal),
    services: Services = Depends(get_services),
    api: ApiState = Depends(get_api_state),
) -> Response:
    """`{"image_data": <base64>, "labels": [...]}` → `{"result": {label: probability}}`. Optional:
    `categories` (label → category, summed), `multi_label` (independent scores), `templates`
    (`a photo of {}` by default; several are averaged) and `images` (a list) instead of
    `image_data` → `{"results": [...]}`."""
    _require_json(_media_type(request))
    payload = _parse_json(ZeroShotRequestBody, await request.body())
    checked = ZeroShotRequest.create(payload.labels, payload.categories, payload.multi_label, payload.templates)
    sources = _zero_shot_sources(payload, api.settings)
    services.limiter.hit(principal.sub, cost=len(sources))

    def classify(images: Sequence[LoadedImage]) -> Awaitable[list[ClassificationOutcome]]:
        return services.classification.zero_shot(
            images, checked.labels, checked.categories, checked.multi_label, checked.templates
        )

    reports = await _unless_disconnected(request, _run(services, api, sources, classify))
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    _count(api, ZERO_SHOT_TASK, reports)
    if payload.image_data is not None:
        report = reports[0]
        if report.result is None:
            return app_error_response(report.error or InferenceError("No result."))
        return JSONResponse(report.result.to_dict())
    return _respond(reports, {"results": [_result_entry(report) for report in reports]}, "results")


def _zero_shot_sources(payload: ZeroShotRequestBody, settings: Settings) -> list[ImageSource]:
    if payload.image_data is not None:
        return [_decoded("image_data", payload.image_data, settings)]
    items = payload.images or []
    check_image_count(len(items), settings)
    sources = []
    for index, item in enumerate(items):
        name = f"images[{index}]"
        sources.append(ImageSource(name, url=item.url) if not isinstance(item, str) else _decoded(name, item, settings))
    return sources


# -- shared ------------------------------------------------------------------------------------------------
async def _run(
    services: Services,
    api: ApiState,
    sources: Sequence[ImageSource],
    classify: Callable[[Sequence[LoadedImage]], Awaitable[list[ClassificationOutcome]]],
) -> list[_Report]:
    """Fetch and decode every source, classify the images that loaded (one batch), merge in order."""
    limits = ImageLimits(api.settings.max_image_bytes, api.settings.max_image_pixels)
    loaded = await load_sources(sources, api.fetcher, limits)
    images = [item for item in loaded if isinstance(item, LoadedImage)]
    outcomes = iter(await classify(images) if images else [])
    reports = []
    for source, item in zip(sources, loaded, strict=True):
        if isinstance(item, AppError):
            reports.append(_Report(source.name, error=item))
        else:
            outcome = next(outcomes)
            reports.append(_Report(source.name, result=outcome.result, error=outcome.error))
    return reports


async def _unless_disconnected(request: Request, work: Awaitable[list[_Report]]) -> list[_Report] | None:
    finished, reports = await run_unless_disconnected(request, work)
    return reports if finished else None


def _result_entry(report: _Report) -> dict[str, Any]:
    if report.result is None:
        return report.error_dict()
    return {"name": report.name, **report.result.to_dict()}


def _respond(reports: Sequence[_Report], body: dict[str, Any], key: str) -> JSONResponse:
    """200 when at least one image succeeded; otherwise the first error's status, entries kept."""
    failed = [report.error for report in reports if report.result is None]
    if reports and len(failed) == len(reports):
        return app_error_response(failed[0] or InferenceError("No result."), extra={key: body[key]})
    return JSONResponse(body)


def _count(api: ApiState, task: str, reports: Sequence[_Report]) -> None:
    failed = sum(1 for report in reports if report.result is None)
    api.metrics.analyze_images.labels(task, "ok").inc(len(reports) - failed)
    api.metrics.analyze_images.labels(task, "error").inc(failed)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require_json(media_type: str) -> None:
    if not (media_type == "application/json" or media_type.endswith("+json")):
        raise UnsupportedMediaType(
            "Send the request as application/json (or multipart/form-data where files are accepted).",
            code="unsupported_content_type",
        )


def _parse_json(model: type[ModelT], body: bytes) -> ModelT:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False, include_url=False)) from None


def _parse_fields(model: type[ModelT], fields: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False, include_url=False)) from None


async def _read_uploads(form: FormData, settings: Settings, field: str) -> list[ImageSource]:
    """Read inside the form's context (it closes the spooled files); the body size is capped upstream."""
    uploads = form.getlist(field)
    if not uploads:
        raise RequestValidationError([{"type": "missing", "loc": ("body", field), "msg": "Field required"}])
    check_image_count(len(uploads), settings)
    return [await source_from_upload(upload, index, settings) for index, upload in enumerate(uploads)]


def _decoded(name: str, text: str, settings: Settings) -> ImageSource:
    """A base64 string or a data URL as an image source (a decoding error stays with this image)."""
    try:
        if text.lstrip()[:5].lower() == "data:":
            return ImageSource(name, data=decode_data_url(text.strip(), settings.max_image_bytes, name))
        return ImageSource(name, data=decode_base64(text, settings.max_image_bytes, name))
    except AppError as exc:
        return ImageSource(name, error=exc)
