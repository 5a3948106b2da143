"""POST /api/v1/analyze: one task on one or many images (JSON or multipart), results in input order."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.api.auth import Principal, require_principal
from app.api.deps import ApiState, get_api_state, get_services
from app.api.disconnect import run_unless_disconnected
from app.api.errors import app_error_response, error_responses
from app.api.intake import AnalyzeInput, load_sources, read_analyze_input
from app.api.metrics import TASK_STATE_KEY
from app.api.schemas import AnalyzeResponse, analyze_request_body
from app.drawing import Annotator, to_png_bytes
from app.errors import AppError, InferenceError
from app.images import ImageLimits, LoadedImage
from app.results import AnyResult
from app.services.container import Services
from app.tasks import TaskSpec, get_task, validate_task_inputs

router = APIRouter(prefix="/api/v1", tags=["analyze"])
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody receives it


@router.post(
    "/analyze",
    summary="Run one task on one or more images",
    response_model=AnalyzeResponse,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 500, 503),
    openapi_extra=analyze_request_body(),
)
async def analyze(
    request: Request,
    principal: Principal = Depends(require_principal),
    services: Services = Depends(get_services),
    api: ApiState = Depends(get_api_state),
) -> Response:
    """Images come as multipart `files`, or in JSON as `{"url"}`, `{"base64"}` or data URLs.

    The response has one entry per image, in input order. An image that fails carries
    `{"error": {"code", "message"}}` in its place while the others succeed; when every image fails
    the status is that of the first error and the body also has a top-level `error`.
    """
    parsed = await read_analyze_input(request, api.settings)
    spec = get_task(parsed.task)
    setattr(request.state, TASK_STATE_KEY, spec.token)
    text = validate_task_inputs(spec, parsed.text, parsed.region)
    # One unit of the shared RATE_LIMIT per image, counted before any fetching or model work.
    services.limiter.hit(principal.sub, cost=len(parsed.sources))

    finished, reports = await run_unless_disconnected(request, _run(services, api, spec, text, parsed))
    if not finished or reports is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    failed = [report.error for report in reports if report.error is not None]
    api.metrics.analyze_images.labels(spec.token, "ok").inc(len(reports) - len(failed))
    api.metrics.analyze_images.labels(spec.token, "error").inc(len(failed))
    results = [report.to_dict() for report in reports]
    if len(failed) == len(reports):
        return app_error_response(failed[0], extra={"results": results})
    return JSONResponse({"results": results})


@dataclass
class _ImageReport:
    """What became of one input image."""

    name: str
    image: LoadedImage | None = None
    result: AnyResult | None = None
    error: AppError | None = None
    annotated_png: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            error = self.error or InferenceError("No result.")
            return {"name": self.name, "error": {**error.to_dict(), "status": error.http_status}}
        body: dict[str, Any] = {"name": self.name, **self.result.to_dict()}
        if self.annotated_png is not None:
            body["annotated_png"] = self.annotated_png
        return body


async def _run(
    services: Services, api: ApiState, spec: TaskSpec, text: str | None, parsed: AnalyzeInput
) -> list[_ImageReport]:
    limits = ImageLimits(api.settings.max_image_bytes, api.settings.max_image_pixels)
    loaded = await load_sources(parsed.sources, api.fetcher, limits)
    images = [item for item in loaded if isinstance(item, LoadedImage)]
    outcomes = iter(await services.analysis.analyze_async(images, spec, text, parsed.region) if images else [])
    reports = []
    for source, item in zip(parsed.sources, loaded, strict=True):
        if isinstance(item, AppError):
            reports.append(_ImageReport(source.name, error=item))
        else:
            outcome = next(outcomes)
            reports.append(_ImageReport(source.name, image=item, result=outcome.result, error=outcome.error))
    if parsed.annotate:
        await asyncio.to_thread(_annotate, reports)
    return reports


def _annotate(reports: Sequence[_ImageReport]) -> None:
    """Draw each result on its image and attach it as base64 PNG."""
    annotator = Annotator()
    for report in reports:
        if report.image is not None and report.result is not None:
            drawn = annotator.annotate(report.image.image, report.result)
            report.annotated_png = base64.b64encode(to_png_bytes(drawn)).decode("ascii")
