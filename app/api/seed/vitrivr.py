"""Seed-compatible job routes (vitrivr feature-extraction-server's API), one set per task.

POST /api/tasks/{task}/{model}/jobs          {"image": <data URL, base64 or URL>, "classes": [...], "config": {}}
POST /api/tasks/{task}/batched/{model}/jobs  {"image": [...], "classes": [...], "config": {}}
     → 200 {"id", "status": "starting"}
GET  /api/tasks/{task}/jobs/{id}             {"status": "complete", "result": {<key>: value}}
GET  /api/tasks/{task}/batched/jobs/{id}     {"status": "complete", "result": [{<key>: value}, ...]}
GET  /api/tasks, /api/tasks/{task}/models, /api/models: the listings.

Shapes are in app/api/seed/vitrivr_schemas.py. `{model}` is kept for compatibility: jobs run on the model
this server is configured with, named in `model`. A batched job keeps going when one image fails:
that image's entry has the empty value and an `error`.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.auth import PrincipalDep
from app.api.deps import ApiStateDep
from app.api.errors import error_responses
from app.api.intake import parse_body
from app.api.seed.vitrivr_schemas import (
    SEED_TASKS,
    SeedBatch,
    SeedJob,
    SeedJobStatus,
    SeedTask,
    job_response_model,
    seed_state,
)
from app.api.v1.jobs import (
    JobsDep,
    Submitter,
    SubmitterDep,
    body_fingerprint,
    check_idempotency_key,
    json_body,
    read_json_object,
    sources_from_json,
    submit_job,
)
from app.core.classify_math import RAW_LABEL_TEMPLATES
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
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

router = APIRouter(prefix="/api/tasks")
listings = APIRouter(tags=["jobs (vitrivr-compatible)"])
SEED_TOP_K = 5  # what the seed's image-classification returned
_CAPTION_TASKS = {"basic": "CAPTION", "detailed": "DETAILED_CAPTION", "more_detailed": "MORE_DETAILED_CAPTION"}


def seed_params(
    name: str, task: SeedTask, classes: list[str] | None, config: dict[str, Any], services: Services
) -> dict[str, Any]:
    """The job parameters for a seed task. Known `config` keys are checked; others are ignored."""
    if classes and not task.takes_classes:
        raise InvalidInput(f"{name} takes no 'classes'.", code="unexpected_classes")
    if task.kind == ZERO_SHOT:
        multi_label, templates = config.get("multi_label", False), config.get("templates")
        if not isinstance(multi_label, bool):
            raise InvalidInput("config.multi_label must be true or false.", code="invalid_config")
        if templates is not None and not (isinstance(templates, list) and all(isinstance(t, str) for t in templates)):
            raise InvalidInput("config.templates must be a list of strings with `{}`.", code="invalid_config")
        if not classes:
            # `classes` is optional in the seed's schema and a job without them fails there when it runs;
            # so here: accepted, then `failed` with `missing_labels`.
            return {
                "labels": [],
                "categories": None,
                "multi_label": multi_label,
                "templates": list(RAW_LABEL_TEMPLATES),
            }
        # The seed's CLIP scores the class names as given; templates are an opt-in.
        return zero_shot_params(classes, None, multi_label, templates or RAW_LABEL_TEMPLATES)
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
def seed_output(name: str, entry: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """One image's answer in the seed's output shape; an image that failed gets the empty value."""
    failed = "error" in entry
    if name == "zero-shot-image-classification":
        scores = scores_by_label(entry)
        # As stored with the job: rounded to 6 decimals (the seed sends the model's floats unrounded).
        return {"probabilities": [] if failed else [float(scores.get(label, 0.0)) for label in classes]}
    if name == "image-classification":
        return {"predictions": entry.get("predictions", [])}
    if name == "object-detection":
        detections = entry.get("detections", [])
        return {
            "labels": [d["label"] for d in detections],
            "boxes": [[round(v) for v in d["xyxy"]] for d in detections],
            # Florence-2 scores boxes only when per-box scores are on; a box without one counts as found.
            "scores": [float(d.get("score", 1.0)) for d in detections],
        }
    key = "caption" if name == "image-captioning" else "text"
    return {key: entry.get("text", "")}


def seed_view(record: JobRecord, name: str) -> dict[str, Any]:
    seed = record.params.get("seed", {})
    body: dict[str, Any] = {"id": record.id, "status": seed_state(record.status), "model": seed.get("served_model")}
    if record.status is JobStatus.COMPLETE and isinstance(record.result, dict):
        outputs = []
        for entry in record.result.get("results", []):
            output = seed_output(name, entry, seed.get("classes") or [])
            if "error" in entry:
                output["error"] = entry["error"]
            outputs.append(output)
        body["result"] = outputs if seed.get("batched") else outputs[0]
    elif record.error is not None:
        body["error"] = record.error
    return body


def served_model(settings: Settings, task: SeedTask) -> str:
    if task.kind == ANALYZE:
        return settings.model_id
    return str(getattr(settings, "zero_shot_model_id" if task.kind == ZERO_SHOT else "classifier_model_id", "") or "")


# -- routes ---------------------------------------------------------------------------------------------------
async def _submit(request: Request, name: str, model: str, batched: bool, submitter: Submitter) -> JSONResponse:
    task = SEED_TASKS[name]
    body = await read_json_object(request)
    key = check_idempotency_key(submitter.idempotency_key)
    fingerprint = body_fingerprint(name, model, batched, body)
    parsed = parse_body(SeedBatch, body) if batched else parse_body(SeedJob, body)
    images = parsed.image if isinstance(parsed, SeedBatch) else [parsed.image]
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
    headers = {"Location": f"/api/tasks/{name}/{'batched/' if batched else ''}jobs/{record.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    # 200, not 202: the seed's clients check for 200.
    return JSONResponse({"id": record.id, "status": seed_state(record.status)}, headers=headers)


async def _read(name: str, job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
    record = await asyncio.to_thread(jobs.queue.get, job_id, principal.sub)
    if record.params.get("seed", {}).get("task") != name:
        raise NotFound(f"No job {job_id[:64]!r}.", code="job_not_found")
    return JSONResponse(seed_view(record, name))


_CREATE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
_READ_ERRORS = error_responses(401, 404, 503)


def _add_task_routes(name: str) -> None:
    tags: list[str | Enum] = [f"{name} (vitrivr-compatible)"]

    async def create_batched(request: Request, model: str, submitter: SubmitterDep) -> JSONResponse:
        return await _submit(request, name, model, True, submitter)

    async def create_single(request: Request, model: str, submitter: SubmitterDep) -> JSONResponse:
        return await _submit(request, name, model, False, submitter)

    async def read_batched(job: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
        return await _read(name, job, principal, jobs)

    async def read_single(job: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
        return await _read(name, job, principal, jobs)

    batched_model, single_model = job_response_model(name, True), job_response_model(name, False)
    # The batched path first: `{model:path}` would otherwise swallow `batched/<model>`.
    router.add_api_route(f"/{name}/batched/{{model:path}}/jobs", create_batched, methods=["POST"], tags=tags,
                         response_model=SeedJobStatus, responses=_CREATE_ERRORS, summary="New batched job",
                         operation_id=f"new_batched_job_{name}", openapi_extra=json_body(SeedBatch))  # fmt: skip
    router.add_api_route(f"/{name}/{{model:path}}/jobs", create_single, methods=["POST"], tags=tags,
                         response_model=SeedJobStatus, responses=_CREATE_ERRORS, summary="New job",
                         operation_id=f"new_job_{name}", openapi_extra=json_body(SeedJob))  # fmt: skip
    router.add_api_route(f"/{name}/batched/jobs/{{job}}", read_batched, methods=["GET"], tags=tags,
                         response_model=batched_model, responses=_READ_ERRORS, summary="Batched job results",
                         operation_id=f"get_batched_job_{name}")  # fmt: skip
    router.add_api_route(f"/{name}/jobs/{{job}}", read_single, methods=["GET"], tags=tags,
                         response_model=single_model | batched_model,
                         responses=_READ_ERRORS, summary="Job results", operation_id=f"get_job_{name}")  # fmt: skip


for _name in SEED_TASKS:
    _add_task_routes(_name)


@router.get("", response_model=list[str], tags=["jobs (vitrivr-compatible)"], responses=error_responses(401),
            summary="Task names the seed-compatible job routes serve")  # fmt: skip
async def list_tasks(principal: PrincipalDep) -> list[str]:
    return list(SEED_TASKS)


@router.get("/{task}/models", response_model=list[str], tags=["jobs (vitrivr-compatible)"],
            responses=error_responses(401, 404), summary="The model that serves a task")  # fmt: skip
async def list_task_models(task: str, principal: PrincipalDep, api: ApiStateDep) -> list[str]:
    spec = SEED_TASKS.get(task)
    if spec is None:
        raise NotFound(f"No task {task[:60]!r}; use one of {', '.join(SEED_TASKS)}.", code="unknown_task")
    return [served_model(api.settings, spec)]


@listings.get("/api/models", response_model=list[str], responses=error_responses(401),
              summary="Models behind the seed-compatible job routes")  # fmt: skip
async def list_models(principal: PrincipalDep, api: ApiStateDep) -> list[str]:
    settings = api.settings
    return list(dict.fromkeys(m for spec in SEED_TASKS.values() if (m := served_model(settings, spec))))
