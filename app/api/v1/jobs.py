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
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.auth import Principal, PrincipalDep
from app.api.deps import ApiState, ApiStateDep, ServicesDep
from app.api.errors import error_responses
from app.api.intake import (
    ImageSource,
    check_image_count,
    checked_bytes,
    parse_body,
    parse_json_object,
    require_json,
    source_from_json,
)
from app.api.seed.classify_schemas import ZeroShotRequestBody
from app.api.v1.schemas import AnalyzeRequest, ImageInput, inline_refs
from app.api.v1.schemas_classify import ClassifyRequest
from app.core.classify_math import RAW_LABEL_TEMPLATES
from app.core.config import Settings
from app.core.errors import AppError, InvalidInput, ModelUnavailable
from app.core.images import ImageLimits
from app.core.tasks import get_task, text_with_classes
from app.jobs.callbacks import CallbackPoster
from app.jobs.kinds import (
    ANALYZE,
    CLASSIFY,
    analyze_params,
    classify_params,
    job_tasks,
    normalize_kind,
    zero_shot_params,
)
from app.jobs.records import IdempotencyConflict, JobInput, JobRecord
from app.jobs.worker import JobSystem
from app.services.container import Services
from app.services.ratelimit import work_cost

router = APIRouter(prefix="/api/v1", tags=["jobs"])
MAX_IDEMPOTENCY_KEY_CHARS = 255


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


async def get_jobs(request: Request) -> JobSystem:  # async: see app/api/deps.py
    system: JobSystem | None = getattr(request.app.state, "jobs", None)
    if system is None:
        raise ModelUnavailable("The job queue is not running (the server is starting).", code="jobs_unavailable")
    return system


JobsDep = Annotated[JobSystem, Depends(get_jobs)]


@dataclass(frozen=True)
class Submitter:
    """Who submits a job and what the submission needs: the dependencies of every job-creating route."""

    principal: Principal
    services: Services
    api: ApiState
    jobs: JobSystem
    idempotency_key: str | None


async def get_submitter(
    principal: PrincipalDep,
    services: ServicesDep,
    api: ApiStateDep,
    jobs: JobsDep,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> Submitter:
    return Submitter(principal, services, api, jobs, idempotency_key)


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]


# -- intake shared with the seed-compatible routes --------------------------------------------------------
async def read_json_object(request: Request) -> dict[str, Any]:
    require_json(request, "Send jobs as application/json.")
    return parse_json_object(await request.body())


def body_fingerprint(*parts: Any) -> str:
    """Identifies a request for `Idempotency-Key`: the same key with another body is a conflict."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sources_from_json(items: Sequence[ImageInput | str], settings: Settings) -> list[ImageSource]:
    """JSON image inputs as the synchronous routes read them, plus bare http(s) URLs (seed clients send them)."""
    check_image_count(len(items), settings)
    return [source_from_json(item, index, settings, bare_urls=True) for index, item in enumerate(items)]


def parse_analyze(body: dict[str, Any], settings: Settings) -> tuple[dict[str, Any], list[ImageSource]]:
    request = parse_body(AnalyzeRequest, body)
    region = request.region
    xyxy = (region[0], region[1], region[2], region[3]) if region is not None else None
    text = text_with_classes(get_task(request.task), request.text, request.labels)
    params = analyze_params(request.task, text, xyxy, request.annotate, request.min_score)
    return params, sources_from_json(request.images, settings)


def parse_classification(
    kind: str, body: dict[str, Any], services: Services, settings: Settings
) -> tuple[dict[str, Any], list[ImageSource]]:
    """The bodies of `POST /api/v1/classify` and `POST /api/zero-shot`, checked the same way."""
    items: Sequence[ImageInput | str]
    if kind == CLASSIFY:
        classify = parse_body(ClassifyRequest, body)
        items = classify.images
        params = classify_params(services.classification, classify.numberofpredictions, classify.language)
    else:
        zero_shot = parse_body(ZeroShotRequestBody, body)
        items = [zero_shot.image_data] if zero_shot.image_data is not None else list(zero_shot.images or [])
        templates = zero_shot.templates or RAW_LABEL_TEMPLATES  # as /api/zero-shot
        params = zero_shot_params(zero_shot.labels, zero_shot.categories, zero_shot.multi_label, templates)
    return params, sources_from_json(items, settings)


async def stored_inputs(sources: Sequence[ImageSource], api: ApiState) -> tuple[list[JobInput], dict[str, Any]]:
    """Fetch URLs now and check that every image decodes; failures stay per image (`input_errors`)."""
    limits = ImageLimits(api.settings.max_image_bytes, api.settings.max_image_pixels)
    outcomes = await checked_bytes(sources, api.fetcher, limits, api.pixels)
    inputs: list[JobInput] = []
    errors: dict[str, Any] = {}
    for index, (source, outcome) in enumerate(zip(sources, outcomes, strict=True)):
        if isinstance(outcome, AppError):
            errors[str(index)] = outcome.to_dict(with_status=True)
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
    submitter: Submitter,
    key: str | None,
    kind: str,
    params: dict[str, Any],
    sources: Sequence[ImageSource],
    fingerprint: str,
    callback_url: str | None = None,
) -> tuple[JobRecord, bool]:
    """Queue the job (`key`: the checked Idempotency-Key), or return the live job a retry refers to."""
    owner, queue = submitter.principal.sub, submitter.jobs.queue
    if key is not None:
        existing = await asyncio.to_thread(queue.find, owner, key)
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflict()
            return existing, False  # a retry: no new rate-limit cost, no fetching
    # The synchronous routes' cost rule (a unit per model run on one image); a job without images still
    # takes its place in the queue, so it costs one.
    submitter.services.limiter.hit(owner, cost=max(1, work_cost(len(sources), job_tasks(kind, params))))
    if callback_url is not None:
        if not isinstance(callback_url, str) or not callback_url:
            raise InvalidInput("callback_url must be an http(s) URL.", code="invalid_url")
        await CallbackPoster(submitter.api.fetcher.policy).check(callback_url)
    inputs, input_errors = await stored_inputs(sources, submitter.api)
    if input_errors:
        params = {**params, "input_errors": input_errors}
    return await asyncio.to_thread(queue.submit, owner, kind, params, inputs, key, callback_url, fingerprint)


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
async def create_job(request: Request, submitter: SubmitterDep) -> JSONResponse:
    """The JSON body of the matching synchronous request plus `"kind"` (`analyze`, `classify` or
    `zero-shot`) and optionally `"callback_url"`, which receives the finished job as a POST."""
    body = await read_json_object(request)
    key = check_idempotency_key(submitter.idempotency_key)
    fingerprint = body_fingerprint(body)
    kind = normalize_kind(body.pop("kind", None))
    callback_url = body.pop("callback_url", None)
    settings = submitter.api.settings
    if kind == ANALYZE:
        params, sources = parse_analyze(body, settings)
    else:
        params, sources = parse_classification(kind, body, submitter.services, settings)
    record, created = await submit_job(submitter, key, kind, params, sources, fingerprint, callback_url)
    return accepted(record, created, f"/api/v1/jobs/{record.id}")


@router.get(
    "/jobs", response_model=JobList, summary="Your jobs, newest first (results left out)",
    responses=error_responses(401, 429, 503),
)  # fmt: skip
async def list_jobs(
    principal: PrincipalDep,
    jobs: JobsDep,
    limit: int = Query(50, ge=1, le=500),
) -> JSONResponse:
    records = await asyncio.to_thread(jobs.queue.list, principal.sub, limit)
    return JSONResponse({"jobs": [r.to_public(include_result=False) for r in records]})


@router.get(
    "/jobs/{job_id}", response_model=JobView, summary="A job's status, timestamps and result or error",
    responses=error_responses(401, 404, 503),
)  # fmt: skip
async def get_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
    record = await asyncio.to_thread(jobs.queue.get, job_id, principal.sub)
    return JSONResponse(record.to_public())


@router.delete(
    "/jobs/{job_id}", response_model=JobView, summary="Cancel a queued or running job",
    responses=error_responses(401, 404, 503),
)  # fmt: skip
async def cancel_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
    """A queued job never runs; a running one finishes its model call and the result is discarded.
    A job that already finished is returned unchanged."""
    record = await asyncio.to_thread(jobs.queue.cancel, job_id, principal.sub)
    return JSONResponse(record.to_public(include_result=False))
