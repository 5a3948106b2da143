"""POST /api/v1/analyze: any registered task on one or many images (JSON or multipart), results in input order."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from app.api.answers import CLIENT_CLOSED_REQUEST, finish_reports, reports_response, run_on_sources
from app.api.auth import PrincipalDep
from app.api.deps import ApiStateDep, ServicesDep
from app.api.errors import error_responses
from app.api.intake import read_analyze_input
from app.api.metrics import TASK_STATE_KEY
from app.api.v1.schemas import AnalyzeResponse, analyze_request_body
from app.core.tasks import get_task
from app.services.per_image import ImageReport, TaskRun, annotate

router = APIRouter(prefix="/api/v1", tags=["analyze"])


@router.post(
    "/analyze",
    summary="Run one task on one or more images",
    response_model=AnalyzeResponse,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503),
    openapi_extra=analyze_request_body(),
)
async def analyze(request: Request, principal: PrincipalDep, services: ServicesDep, api: ApiStateDep) -> Response:
    """Images come as multipart `files`, or in JSON as `{"url"}`, `{"base64"}` or data URLs.

    Any task of GET /api/v1/tasks runs here; what it takes besides the images follows its `input`:
    `text`, `region`, `labels` (the labels to score for zero-shot, the classes to find for
    open-vocabulary detection, with `categories`, `multi_label`, `templates` for zero-shot), and
    `top_n`, `language` for classification.

    The response has one entry per image, in input order. An image that fails carries
    `{"error": {"code", "message"}}` in its place while the others succeed; when every image fails
    the status is that of the first error and the body also has a top-level `error`.
    """
    parsed = await read_analyze_input(request, api.settings)
    spec = get_task(parsed.task)
    setattr(request.state, TASK_STATE_KEY, spec.token)
    # Validated and charged (a unit per model run on one image) before any image is fetched.
    task_run = TaskRun.prepare(
        services.analysis, services.limiter, principal.sub, spec, parsed.fields.task_input(spec), len(parsed.sources)
    )

    async def work() -> list[ImageReport]:
        reports = await run_on_sources(api, services.analysis, task_run, parsed.sources)
        if parsed.annotate:
            await asyncio.to_thread(annotate, reports)
        return reports

    reports = await finish_reports(request, api, spec.token, work())
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return reports_response(reports, [report.to_dict() for report in reports])
