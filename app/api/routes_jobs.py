"""Jobs API: submit any analyze / classify / zero-shot request to the queue and read it back later.

POST /api/v1/jobs (the request body plus `"kind"`) → 202 `{"id", "status"}`; GET /api/v1/jobs/{id};
GET /api/v1/jobs (the caller's own); DELETE /api/v1/jobs/{id} cancels. Image URLs are fetched and
every image is checked at submission: the queue stores the bytes, so a job never depends on a URL
that may have changed or gone by the time a worker reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from app.api.auth import Principal, require_principal
from app.api.deps import ApiState, get_api_state, get_services
from app.api.errors import error_responses
from app.api.intake import ImageSource, check_image_count, decode_base64, source_from_json
from app.api.schemas import AnalyzeRequest, ImageInput, inline_refs
from app.api.schemas_classify import ClassifyRequest, ZeroShotRequestBody
from app.config import Settings
from app.errors import AppError, InvalidInput, ModelUnavailable, UnsupportedMediaType
from app.images import ImageLimits, load_image_bytes
from app.jobs.callbacks import CallbackPoster
from app.jobs.kinds import (
    ANALYZE,
    CLASSIFY,
    analyze_params,
    classify_params,
    normalize_kind,
    zero_shot_params,
)
from app.jobs.records import IdempotencyConflict, JobInput, JobRecord
from app.jobs.worker import JobSystem
from app.services.container import Services

router = APIRouter(prefix="/api/v1", tags=["jobs"])
MAX_IDEMPOTENCY_KEY_CHARS = 255
_DECODE_CONCURRENCY = 2


class JobCreated(BaseModel):
    id: str
    status: str


class JobView(BaseModel):
    id: str
    kind: str
    status: str = Field(description="queued, running, complete, failed or cancelled")
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None = Field(description="When the job and its result are deleted (JOB_TTL after finishing)")
    attempts: int
    images: int
    result: Any = Field(None, description="Per-image results in input order, like the synchronous route")
    error: dict[str, Any] | None
    callback: dict[str, Any] | None = None


class JobList(BaseModel):
    jobs: list[JobView]


class _JobOptions(BaseModel):
    callback_url: str | None = Field(
        None, max_length=2048, description="Receives the finished job as a POST (public addresses only)"
    )


class AnalyzeJob(AnalyzeRequest, _JobOptions):
    kind: Literal["analyze"]


class ClassifyJob(ClassifyRequest, _JobOptions):
    kind: Literal["classify"]


class ZeroShotJob(ZeroShotRequestBody, _JobOptions):
    kind: Literal["zero-shot"]


def json_body(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body by hand: the schema of `models` (any of)."""
    schemas = []
    for model in models:
        schema = model.model_json_schema()
        schemas.append(inline_refs(schema, schema.get("$defs", {})))
    body = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def get_jobs(request: Request) -> JobSystem:
    system: JobSystem | None = getattr(request.app.state, "jobs", None)
    if system is None:
        raise ModelUnavailable("The job queue is not running (the server is starting).", code="jobs_unavailable")
    return system


# -- intake shared with the seed-compatible routes --------------------------------------------------------
async def read_json_object(request: Request) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType("Send jobs as application/json.", code="unsupported_content_type")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_json")
    return body


def body_fingerprint(*parts: Any) -> str:
    """Identifies a request for `Idempotency-Key`: the same key with another body is a conflict."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def source_from_input(item: ImageInput | str, index: int, settings: Settings) -> ImageSource:
    """A JSON image input as the analyze route reads it, plus the strings seed clients send:
    a bare http(s) URL or bare base64."""
    if isinstance(item, str) and item.strip()[:5].lower() != "data:":
        name, text = f"images[{index}]", item.strip()
        if text.startswith(("http://", "https://")):
            return ImageSource(name, url=text)
        try:
            return ImageSource(name, data=decode_base64(text, settings.max_image_bytes, name))
        except AppError as exc:
            return ImageSource(name, error=exc)
    return source_from_json(item, index, settings)


def validation_error(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError(exc.errors(include_input=False, include_url=False))


def parse_analyze(body: dict[str, Any], settings: Settings) -> tuple[dict[str, Any], list[ImageSource]]:
    try:
        request = AnalyzeRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_image_count(len(request.images), settings)
    region = request.region
    xyxy = (region[0], region[1], region[2], region[3]) if region is not None else None
    params = analyze_params(request.task, request.text, xyxy, request.annotate)
    sources = [source_from_input(item, i, settings) for i, item in enumerate(request.images)]
    return params, sources


def parse_classification(
    kind: str, body: dict[str, Any], services: Services, settings: Settings
) -> tuple[dict[str, Any], list[ImageSource]]:
    """The bodies of `POST /api/v1/classify` and `POST /api/zero-shot`, checked the same way."""
    items: Sequence[ImageInput | str]
    try:
        if kind == CLASSIFY:
            classify = ClassifyRequest.model_validate(body)
            items = classify.images
            params = classify_params(services.classification, classify.numberofpredictions, classify.language)
        else:
            zero_shot = ZeroShotRequestBody.model_validate(body)
            items = [zero_shot.image_data] if zero_shot.image_data is not None else list(zero_shot.images or [])
            params = zero_shot_params(zero_shot.labels, zero_shot.categories, zero_shot.multi_label,
                                      zero_shot.templates)  # fmt: skip
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_image_count(len(items), settings)
    return params, [source_from_input(item, i, settings) for i, item in enumerate(items)]


async def stored_inputs(sources: Sequence[ImageSource], api: ApiState) -> tuple[list[JobInput], dict[str, Any]]:
    """Fetch URLs now and check that every image decodes; failures stay per image (`input_errors`)."""
    settings = api.settings
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    gate = asyncio.Semaphore(_DECODE_CONCURRENCY)

    async def read(source: ImageSource) -> bytes | AppError:
        if source.error is not None:
            return source.error
        try:
            data = source.data if source.data is not None else await api.fetcher.fetch(source.url or "")
            async with gate:
                await asyncio.to_thread(load_image_bytes, data, limits, source.name)
        except AppError as exc:
            return exc
        return data

    outcomes = await asyncio.gather(*(read(source) for source in sources))
    inputs: list[JobInput] = []
    errors: dict[str, Any] = {}
    for index, (source, outcome) in enumerate(zip(sources, outcomes, strict=True)):
        if isinstance(outcome, AppError):
            errors[str(index)] = {**outcome.to_dict(), "status": outcome.http_status}
            inputs.append(JobInput(source.name, b""))
        else:
            inputs.append(JobInput(source.name, outcome))
    if errors and len(errors) == len(sources):
        first = next(o for o in outcomes if isinstance(o, AppError))
        raise first
    return inputs, errors


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not value.isascii() or not value.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
            code="invalid_idempotency_key",
        )
    return value


async def submit_job(
    *,
    principal: Principal,
    services: Services,
    api: ApiState,
    jobs: JobSystem,
    kind: str,
    params: dict[str, Any],
    sources: Sequence[ImageSource],
    idempotency_key: str | None,
    fingerprint: str,
    callback_url: str | None = None,
) -> tuple[JobRecord, bool]:
    if idempotency_key is not None:
        existing = await asyncio.to_thread(jobs.queue.find, principal.sub, idempotency_key)
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflict("This Idempotency-Key was already used with a different request body.")
            return existing, False  # a retry: no new rate-limit cost, no fetching
    # One unit of the shared RATE_LIMIT per image, as for the synchronous routes.
    services.limiter.hit(principal.sub, cost=max(1, len(sources)))
    if callback_url is not None:
        if not isinstance(callback_url, str) or not callback_url:
            raise InvalidInput("callback_url must be an http(s) URL.", code="invalid_url")
        await CallbackPoster(api.fetcher.policy).check(callback_url)
    inputs, input_errors = await stored_inputs(sources, api)
    if input_errors:
        params = {**params, "input_errors": input_errors}
    return await asyncio.to_thread(
        jobs.queue.submit, principal.sub, kind, params, inputs, idempotency_key, callback_url, fingerprint
    )


def accepted(record: JobRecord, created: bool, location: str) -> JSONResponse:
    headers = {"Location": location}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse({"id": record.id, "status": record.status.value}, status_code=202, headers=headers)


# -- routes -------------------------------------------------------------------------------------------------
@router.post(
    "/jobs",
    status_code=202,
    response_model=JobCreated,
    summary="Queue an analyze, classify or zero-shot request",
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    openapi_extra=json_body(AnalyzeJob, ClassifyJob, ZeroShotJob),
)
async def create_job(
    request: Request,
    principal: Principal = Depends(require_principal),
    services: Services = Depends(get_services),
    api: ApiState = Depends(get_api_state),
    jobs: JobSystem = Depends(get_jobs),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    """The JSON body of the matching synchronous request plus `"kind"` (`analyze`, `classify` or
    `zero-shot`) and optionally `"callback_url"`, which receives the finished job as a POST."""
    body = await read_json_object(request)
    key = check_idempotency_key(idempotency_key)
    fingerprint = body_fingerprint(body)
    kind = normalize_kind(body.pop("kind", None))
    callback_url = body.pop("callback_url", None)
    if kind == ANALYZE:
        params, sources = parse_analyze(body, api.settings)
    else:
        params, sources = parse_classification(kind, body, services, api.settings)
    record, created = await submit_job(
        principal=principal, services=services, api=api, jobs=jobs, kind=kind, params=params, sources=sources,
        idempotency_key=key, fingerprint=fingerprint, callback_url=callback_url,
    )  # fmt: skip
    return accepted(record, created, f"/api/v1/jobs/{record.id}")


@router.get(
    "/jobs", response_model=JobList, summary="Your jobs, newest first (results left out)",
    responses=error_responses(401, 429, 503),
)  # fmt: skip
async def list_jobs(
    principal: Principal = Depends(require_principal),
    jobs: JobSystem = Depends(get_jobs),
    limit: int = Query(50, ge=1, le=500),
) -> JSONResponse:
    records = await asyncio.to_thread(jobs.queue.list, principal.sub, limit)
    return JSONResponse({"jobs": [r.to_public(include_result=False) for r in records]})


@router.get(
    "/jobs/{job_id}", response_model=JobView, summary="A job's status, timestamps and result or error",
    responses=error_responses(401, 404, 503),
)  # fmt: skip
async def get_job(
    job_id: str, principal: Principal = Depends(require_principal), jobs: JobSystem = Depends(get_jobs)
) -> JSONResponse:
    record = await asyncio.to_thread(jobs.queue.get, job_id, principal.sub)
    return JSONResponse(record.to_public())


@router.delete(
    "/jobs/{job_id}", response_model=JobView, summary="Cancel a queued or running job",
    responses=error_responses(401, 404, 503),
)  # fmt: skip
async def cancel_job(
    job_id: str, principal: Principal = Depends(require_principal), jobs: JobSystem = Depends(get_jobs)
) -> JSONResponse:
    """A queued job never runs; a running one finishes its model call and the result is discarded.
    A job that already finished is returned unchanged."""
    record = await asyncio.to_thread(jobs.queue.cancel, job_id, principal.sub)
    return JSONResponse(record.to_public(include_result=False))
