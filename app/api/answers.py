"""How the synchronous image routes answer: every image in input order, each with its result or error.

Shared by `/api/v1/analyze`, `/api/v1/classify` and the seed classification routes, after
`TaskRun.prepare` (validate, charge the rate limit): fetch and decode the sources, run the task once
on the images that decoded, stop when the client leaves, count each image in the metrics, and pick
the status (200 while at least one image succeeded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from app.api.deps import ApiState
from app.api.disconnect import run_unless_disconnected
from app.api.errors import app_error_response
from app.api.intake import ImageSource, decode_sources, fetch_sources, header_pixels
from app.core.images import ImageLimits
from app.services.analysis import AnalysisService
from app.services.per_image import ImageReport, TaskRun

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody receives it


async def run_on_sources(
    api: ApiState, analysis: AnalysisService, task_run: TaskRun, sources: Sequence[ImageSource]
) -> list[ImageReport]:
    """Fetch and decode every source within the pixel budget, then `task_run` on the images that decoded
    (one batch); every source answers in input order. `task_run` is already validated and paid for."""
    limits = ImageLimits(api.settings.max_image_bytes, api.settings.max_image_pixels)
    raw = await fetch_sources(sources, api.fetcher)
    pixels = header_pixels(raw, limits)
    api.pixels.check_request(pixels)  # 413 before a pixel is decoded
    async with api.pixels.hold(pixels):  # the decoded images live until the model is done with them
        loaded = await decode_sources(sources, raw, limits)
        return await task_run.run(analysis, [source.name for source in sources], loaded)


async def finish_reports(
    request: Request, api: ApiState, task: str, work: Awaitable[list[ImageReport]]
) -> list[ImageReport] | None:
    """`work`'s reports, counted in the metrics under `task`; None when the client left (work cancelled)."""
    finished, reports = await run_unless_disconnected(request, work)
    if not finished or reports is None:
        return None
    failed = sum(1 for report in reports if report.result is None)
    api.metrics.analyze_images.labels(task, "ok").inc(len(reports) - failed)
    api.metrics.analyze_images.labels(task, "error").inc(failed)
    return reports


def reports_response(
    reports: Sequence[ImageReport], entries: list[dict[str, Any]], key: str = "results"
) -> JSONResponse:
    """200 when at least one image succeeded; otherwise the first error's status, with the entries."""
    failed = [report for report in reports if report.result is None]
    if reports and len(failed) == len(reports):
        return app_error_response(failed[0].failure(), extra={key: entries})
    return JSONResponse({key: entries})
