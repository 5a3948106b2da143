"""Seed-compatible job routes, one per task short name, for clients written against the seed API.

POST /api/tasks/{task}/{model}/jobs          {"image": <data URL or URL>, "classes": [...], "config": {}}
POST /api/tasks/{task}/batched/{model}/jobs  {"images": [...], "classes": [...], "config": {}}
GET  /api/tasks/{task}/jobs/{id}             {"status": "complete", "result": {<key>: value}}

Each task answers under one key: `probabilities` (zero-shot, in the order of `classes`),
`predictions` (image-classification), `caption`, `detections`, `text` (OCR). The batched form
answers a list (one value per image) and `errors`, aligned, for images that failed. `{model}` is
kept for compatibility: jobs run on the model this server is configured with, named in `model`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import PrincipalDep
from app.api.errors import error_responses
from app.api.intake import parse_body
from app.api.routes_jobs import (
    JobCreated,
    JobsDep,
    Submitter,
    SubmitterDep,
    accepted,
    body_fingerprint,
    check_idempotency_key,
    json_body,
    read_json_object,
    sources_from_json,
    submit_job,
)
from app.config import Settings
from app.errors import InvalidInput, NotFound
from app.jobs.kinds import (
    ANALYZE,
    CLASSIFY,
    ZERO_SHOT,
    analyze_params,
    classify_params,
    scores_by_label,
    zero_shot_params,
)
from app.jobs.records import JobRecord, JobStatus
from app.services.container import Services

router = APIRouter(prefix="/api/tasks", tags=["jobs (seed-compatible)"])
MAX_CLASSES = 100
SEED_TOP_K = 5  # what the seed's image-classification returned
MAX_IMAGE_FIELD_CHARS = 40 * 1024 * 1024


class SeedJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(min_length=1, max_length=MAX_IMAGE_FIELD_CHARS, description="data URL, base64 or http(s) URL")
    classes: list[str] | None = Field(None, min_length=1, max_length=MAX_CLASSES)
    config: dict[str, Any] = Field(default_factory=dict)


class SeedBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, description="data URLs, base64 or http(s) URLs")
    classes: list[str] | None = Field(None, min_length=1, max_length=MAX_CLASSES)
    config: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class SeedTask:
    kind: str
    key: str  # where the answer goes in `result`
    config_keys: tuple[str, ...]
    needs_classes: bool = False


SEED_TASKS: dict[str, SeedTask] = {
    "zero-shot-image-classification": SeedTask(ZERO_SHOT, "probabilities", ("multi_label", "templates"), True),
    "image-classification": SeedTask(CLASSIFY, "predictions", ("top_n", "top_k", "language")),
    "image-captioning": SeedTask(ANALYZE, "caption", ("detail",)),
    "object-detection": SeedTask(ANALYZE, "detections", ()),
    "optical-character-recognition": SeedTask(ANALYZE, "text", ("regions",)),
}
_CAPTION_TASKS = {"basic": "CAPTION", "detailed": "DETAILED_CAPTION", "more_detailed": "MORE_DETAILED_CAPTION"}


def seed_task(name: str) -> SeedTask:
    try:
        return SEED_TASKS[name]
    except KeyError:
        raise NotFound(f"No task {name[:60]!r}; use one of {', '.join(SEED_TASKS)}.", code="unknown_task") from None


def seed_params(
    name: str, task: SeedTask, classes: list[str] | None, config: dict[str, Any], services: Services
) -> dict[str, Any]:
    """The job parameters for a seed task, with its `config` checked key by key."""
    unknown = sorted(set(config) - set(task.config_keys))
    if unknown:
        allowed = ", ".join(task.config_keys) or "none"
        raise InvalidInput(f"Unknown config key(s) for {name}: {', '.join(unknown)} (allowed: {allowed}).",
                           code="invalid_config")  # fmt: skip
    if task.needs_classes and not classes:
        raise InvalidInput(f"{name} needs a non-empty 'classes' list.", code="missing_classes")
    if not task.needs_classes and classes:
        raise InvalidInput(f"{name} takes no 'classes'.", code="unexpected_classes")
    if task.kind == ZERO_SHOT:
        multi_label, templates = config.get("multi_label", False), config.get("templates")
        if not isinstance(multi_label, bool):
            raise InvalidInput("config.multi_label must be true or false.", code="invalid_config")
        if templates is not None and not (isinstance(templates, list) and all(isinstance(t, str) for t in templates)):
            raise InvalidInput("config.templates must be a list of strings with `{}`.", code="invalid_config")
        return zero_shot_params(classes or [], None, multi_label, templates)
    if task.kind == CLASSIFY:
        top_n, language = config.get("top_n", config.get("top_k", SEED_TOP_K)), config.get("language", "en")
        if not isinstance(top_n, int) or isinstance(top_n, bool) or not isinstance(language, str):
            raise InvalidInput("config.top_n must be a whole number and config.language a string.",
                               code="invalid_config")  # fmt: skip
        return classify_params(services.classification, top_n, language)
    if name == "image-captioning":
        detail = config.get("detail", "basic")
        if not isinstance(detail, str) or detail not in _CAPTION_TASKS:  # [] or {} are unhashable
            raise InvalidInput(f"config.detail must be one of {', '.join(_CAPTION_TASKS)}.", code="invalid_config")
        return analyze_params(_CAPTION_TASKS[detail], None, None)
    if name == "object-detection":
        return analyze_params("OD", None, None)
    regions = config.get("regions", False)
    if not isinstance(regions, bool):
        raise InvalidInput("config.regions must be true or false.", code="invalid_config")
    return analyze_params("OCR_WITH_REGION" if regions else "OCR", None, None)


# -- answers --------------------------------------------------------------------------------------------------
def _probabilities(entry: dict[str, Any], classes: list[str]) -> list[float]:
    scores = scores_by_label(entry)
    return [round(float(scores.get(label, 0.0)), 6) for label in classes]


def seed_value(task: SeedTask, entry: dict[str, Any], classes: list[str]) -> Any:
    extract: dict[str, Callable[[], Any]] = {
        "probabilities": lambda: _probabilities(entry, classes),
        "predictions": lambda: entry.get("predictions", []),
        "caption": lambda: entry.get("text", ""),
        "detections": lambda: entry.get("detections", []),
        "text": lambda: entry.get("text", ""),
    }
    return extract[task.key]()


def seed_view(record: JobRecord, task: SeedTask) -> dict[str, Any]:
    seed = record.params.get("seed", {})
    body: dict[str, Any] = {"id": record.id, "status": record.status.value}
    if record.status is JobStatus.COMPLETE and isinstance(record.result, dict):
        entries = record.result.get("results", [])
        values = [None if "error" in e else seed_value(task, e, seed.get("classes") or []) for e in entries]
        result: dict[str, Any] = {task.key: values if seed.get("batched") else values[0]}
        if seed.get("batched"):
            result["errors"] = [e.get("error") for e in entries]
        result["model"] = seed.get("served_model")
        body["result"] = result
    elif record.error is not None:
        body["error"] = record.error
    return body


def served_model(settings: Settings, task: SeedTask) -> str:
    if task.kind == ANALYZE:
        return settings.model_id
    return str(getattr(settings, "zero_shot_model_id" if task.kind == ZERO_SHOT else "classifier_model_id", "") or "")


# -- routes ---------------------------------------------------------------------------------------------------
async def _submit(request: Request, name: str, model: str, batched: bool, submitter: Submitter) -> JSONResponse:
    task = seed_task(name)
    body = await read_json_object(request)
    key = check_idempotency_key(submitter.idempotency_key)
    fingerprint = body_fingerprint(name, model, batched, body)
    parsed = parse_body(SeedBatch, body) if batched else parse_body(SeedJob, body)
    images = parsed.images if isinstance(parsed, SeedBatch) else [parsed.image]
    settings = submitter.api.settings
    sources = sources_from_json(images, settings)
    params = seed_params(name, task, parsed.classes, parsed.config, submitter.services)
    params["seed"] = {
        "task": name,
        "batched": batched,
        "classes": parsed.classes,
        "requested_model": model,
        "served_model": served_model(settings, task),
    }
    record, created = await submit_job(submitter, key, task.kind, params, sources, fingerprint)
    return accepted(record, created, f"/api/tasks/{name}/jobs/{record.id}")


_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)


@router.post("/{task}/batched/{model:path}/jobs", status_code=202, response_model=JobCreated, responses=_ERRORS,
             summary="Queue a list of images for one task (seed-compatible)",
             openapi_extra=json_body(SeedBatch))  # fmt: skip
async def create_batched_job(request: Request, task: str, model: str, submitter: SubmitterDep) -> JSONResponse:
    return await _submit(request, task, model, True, submitter)


@router.post("/{task}/{model:path}/jobs", status_code=202, response_model=JobCreated, responses=_ERRORS,
             summary="Queue one image for one task (seed-compatible)", openapi_extra=json_body(SeedJob))  # fmt: skip
async def create_single_job(request: Request, task: str, model: str, submitter: SubmitterDep) -> JSONResponse:
    return await _submit(request, task, model, False, submitter)


@router.get("/{task}/jobs/{job_id}", summary="A seed-compatible job's status and result",
            responses=error_responses(401, 404, 503))  # fmt: skip
async def get_seed_job(task: str, job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
    spec = seed_task(task)
    record = await asyncio.to_thread(jobs.queue.get, job_id, principal.sub)
    if record.params.get("seed", {}).get("task") != task:
        raise NotFound(f"No job {job_id[:64]!r}.", code="job_not_found")
    return JSONResponse(seed_view(record, spec))
