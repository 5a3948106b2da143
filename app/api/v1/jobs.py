"""Jobs API: submit any task to the queue and read its result back later.

POST /api/v1/jobs (the request body plus `"kind"`) → 202 `{"id", "status"}`; GET /api/v1/jobs/{id};
GET /api/v1/jobs (the caller's own); DELETE /api/v1/jobs/{id} cancels. Kind `analyze` runs any
registered task; `classify` and `zero-shot` take the bodies of their synchronous routes. Parameters
are typed (`app/jobs/params.py`) and checked here, so a bad request never reaches the queue; the
shared submission steps are in `app/api/job_intake.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import PrincipalDep
from app.api.errors import error_responses
from app.api.intake import parse_body
from app.api.job_intake import (
    JobsDep,
    SubmitterDep,
    body_fingerprint,
    check_idempotency_key,
    json_body,
    read_json_object,
    sources_from_json,
    submit_job,
)
from app.api.seed.classify_schemas import ZeroShotRequestBody
from app.api.v1.schemas import AnalyzeRequest, ImageInput
from app.api.v1.schemas_classify import ClassifyRequest
from app.core.classify_math import RAW_LABEL_TEMPLATES
from app.core.tasks import TaskSpec, get_task, text_with_classes
from app.jobs.kinds import AnyParams, check_params
from app.jobs.params import (
    CLASSIFY_KIND,
    ZERO_SHOT_KIND,
    AnalyzeParams,
    ClassifyParams,
    ZeroShotParams,
    job_kinds,
    normalize_kind,
)
from app.jobs.records import JobRecord

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobCreated(BaseModel):
    id: str
    status: str


class JobImageResult(BaseModel):
    """One image of a finished job: the synchronous route's entry for it."""

    model_config = ConfigDict(extra="allow")
    name: str
    kind: str | None = Field(None, description="The result type (`detection`, `classification`, ...); absent on error")
    error: dict[str, Any] | None = Field(None, description="`{code, message}` when this image failed")


class JobResult(BaseModel):
    task: str | None = Field(None, description="The task token (kind `analyze`)")
    results: list[JobImageResult] = Field(description="Per-image results in input order")


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
    result: JobResult | None = Field(None, description="Per-image results in input order, like the synchronous route")
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


def parse_job(kind: str, body: dict[str, Any]) -> tuple[AnyParams, list[ImageInput | str]]:
    """The body of `kind` as typed parameters (not yet checked against the task) and its images."""
    if kind == CLASSIFY_KIND:
        classify = parse_body(ClassifyRequest, body)
        return ClassifyParams(top_n=classify.numberofpredictions, language=classify.language), list(classify.images)
    if kind == ZERO_SHOT_KIND:
        zero_shot = parse_body(ZeroShotRequestBody, body)
        items = [zero_shot.image_data] if zero_shot.image_data is not None else list(zero_shot.images or [])
        params = ZeroShotParams(
            labels=zero_shot.labels,
            categories=zero_shot.categories,
            multi_label=zero_shot.multi_label,
            templates=zero_shot.templates or list(RAW_LABEL_TEMPLATES),  # as /api/zero-shot
        )
        return params, list(items)
    fixed: TaskSpec | None = job_kinds().get(kind)  # a task's own job kind: its task is implied
    request = parse_body(AnalyzeRequest, {"task": fixed.token, **body} if fixed is not None else body)
    return analyze_params(request), list(request.images)


def analyze_params(request: AnalyzeRequest) -> AnalyzeParams:
    spec = get_task(request.task)
    labels, text = request.labels, request.text
    if not spec.needs_labels:  # open-vocabulary classes may come as labels
        labels, text = None, text_with_classes(spec, request.text, request.labels)
    return AnalyzeParams(
        task=spec.token,
        text=text,
        region=request.region,
        annotate=request.annotate,
        min_score=request.min_score,
        labels=labels,
        categories=request.categories,
        multi_label=request.multi_label,
        templates=request.templates,  # none: the ZERO_SHOT task's default, as `POST /api/v1/analyze` uses
        top_n=request.top_n,
        language=request.language,
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
    summary="Queue any task (kind analyze), or a classify or zero-shot request",
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    openapi_extra=json_body(AnalyzeJob, ClassifyJob, ZeroShotJob),
)
async def create_job(request: Request, submitter: SubmitterDep) -> JSONResponse:
    """The JSON body of the matching synchronous request plus `"kind"`: `analyze` (any task of
    GET /api/v1/tasks), `classify` or `zero-shot`; optionally `"callback_url"`, which receives the
    finished job as a POST."""
    body = await read_json_object(request)
    key = check_idempotency_key(submitter.idempotency_key)
    fingerprint = body_fingerprint(body)
    kind = normalize_kind(body.pop("kind", None))
    callback_url = body.pop("callback_url", None)
    parsed, images = parse_job(kind, body)
    params = check_params(submitter.services.analysis, parsed)
    sources = sources_from_json(images, submitter.api.settings)
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
