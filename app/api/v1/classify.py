"""POST /api/v1/classify: ImageNet classification with synset ids and names in English or German.

The CLASSIFY task of the registry with the fields of the replaced system (`numberofpredictions`);
`/api/v1/analyze` with `task: CLASSIFY` answers the same. Same auth, rate limit (a unit per image),
image intake and error shape as `/api/v1/analyze`; every image gets its own entry in input order.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.answers import CLIENT_CLOSED_REQUEST, finish_reports, reports_response, run_on_sources
from app.api.auth import PrincipalDep
from app.api.deps import ApiStateDep, ServicesDep
from app.api.errors import error_responses
from app.api.intake import (
    JSON_ONLY,
    ImageSource,
    check_image_count,
    form_fields,
    is_multipart,
    parse_body,
    read_uploads,
    require_json,
    source_from_json,
)
from app.api.v1.schemas import ClassifyResponse
from app.api.v1.schemas_classify import ClassifyForm, ClassifyRequest, classify_body
from app.core.config import Settings
from app.core.task_inputs import TaskInput
from app.core.tasks import CLASSIFY
from app.services.per_image import TaskRun

router = APIRouter(tags=["classification"])
ERRORS = error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503)


@router.post(
    "/api/v1/classify",
    summary="ImageNet classification with synset ids and names in English or German",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=classify_body(),
)
async def classify_v1(request: Request, principal: PrincipalDep, services: ServicesDep, api: ApiStateDep) -> Response:
    """Images as in `/api/v1/analyze` (JSON `images` or multipart `files`), `numberofpredictions`
    (default 3) and `language` (`en`, `de`) → `{"results": [{"predictions": [{"class", "name",
    "probability"}], "duration", "repository", "version", "library", "model", ...}]}`."""
    sources, task_input = await _read_v1_input(request, api.settings)
    task_run = TaskRun.prepare(services.analysis, services.limiter, principal.sub, CLASSIFY, task_input, len(sources))
    work = run_on_sources(api, services.analysis, task_run, sources)
    reports = await finish_reports(request, api, CLASSIFY.short_name, work)
    if reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return reports_response(reports, [report.to_dict() for report in reports])


async def _read_v1_input(request: Request, settings: Settings) -> tuple[list[ImageSource], TaskInput]:
    if is_multipart(request):
        async with request.form(max_fields=20) as form:
            params = parse_body(ClassifyForm, form_fields(form, "files"))
            sources = await read_uploads(form, settings, "files")
        return sources, TaskInput(top_n=params.numberofpredictions, language=params.language)
    require_json(request, JSON_ONLY)
    payload = parse_body(ClassifyRequest, await request.body())
    check_image_count(len(payload.images), settings)
    sources = [source_from_json(item, index, settings) for index, item in enumerate(payload.images)]
    return sources, TaskInput(top_n=payload.numberofpredictions, language=payload.language)
