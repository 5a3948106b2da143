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

from app.api import job_intake as intake
from app.api.auth import PrincipalDep
from app.api.deps import ServicesDep
from app.api.errors import error_responses
from app.api.intake import parse_body
from app.api.job_intake import JobsDep, Submitter, SubmitterDep
from app.api.seed.vitrivr_schemas import (
    SeedBatch,
    SeedJob,
    SeedJobStatus,
    job_response_model,
    seed_state,
    seed_tasks,
)
from app.core.classify_math import RAW_LABEL_TEMPLATES
from app.core.errors import AppError, InvalidInput, NotFound
from app.core.tasks import CAPTION_CHOICES, OutputKind, TaskSpec, get_task
from app.jobs.kinds import AnyParams, check_params
from app.jobs.params import (
    ANALYZE,
    CLASSIFY_KIND,
    ZERO_SHOT_KIND,
    AnalyzeParams,
    ClassifyParams,
    SeedInfo,
    ZeroShotParams,
)
from app.jobs.records import JobRecord, JobStatus
from app.services.analysis import AnalysisService
from app.services.container import Services

router = APIRouter(prefix="/api/tasks")
listings = APIRouter(tags=["jobs (vitrivr-compatible)"])
SEED_TOP_K = 5  # what the seed's image-classification returned
_CAPTION_DETAIL = dict(zip(("basic", "detailed", "more_detailed"), CAPTION_CHOICES, strict=True))


def seed_task(name: str) -> TaskSpec:
    spec = seed_tasks().get(name)
    if spec is None:
        raise NotFound(f"No task {name[:60]!r}; use one of {', '.join(seed_tasks())}.", code="unknown_task")
    return spec


def seed_params(
    name: str, spec: TaskSpec, classes: list[str] | None, config: dict[str, Any], analysis: AnalysisService
) -> AnyParams:
    """The checked job parameters for a seed task. Known `config` keys are checked; others are ignored."""
    if classes and not spec.needs_labels:
        raise InvalidInput(f"{name} takes no 'classes'.", code="unexpected_classes")
    if spec.needs_labels:
        multi_label, templates = config.get("multi_label", False), config.get("templates")
        if not isinstance(multi_label, bool):
            raise InvalidInput("config.multi_label must be true or false.", code="invalid_config")
        if templates is not None and not (isinstance(templates, list) and all(isinstance(t, str) for t in templates)):
            raise InvalidInput("config.templates must be a list of strings with `{}`.", code="invalid_config")
        # The seed's CLIP scores the class names as given; templates are an opt-in.
        labels = {"labels": classes or [], "multi_label": multi_label, "templates": templates or RAW_LABEL_TEMPLATES}
        params: AnyParams = (
            ZeroShotParams(**labels) if spec.job_kind == ZERO_SHOT_KIND else AnalyzeParams(task=spec.token, **labels)
        )
        # `classes` is optional in the seed's schema and a job without them fails there when it runs;
        # so here: accepted, then `failed` with `missing_labels`.
        return check_params(analysis, params) if classes else params
    if spec.output_kind is OutputKind.CLASSES:
        top_n, language = config.get("top_n", config.get("top_k", SEED_TOP_K)), config.get("language", "en")
        if not isinstance(top_n, int) or isinstance(top_n, bool) or not isinstance(language, str):
            raise InvalidInput("config.top_n must be a whole number and config.language a string.",
                               code="invalid_config")  # fmt: skip
        if spec.job_kind == CLASSIFY_KIND:
            return check_params(analysis, ClassifyParams(top_n=top_n, language=language))
        return check_params(analysis, AnalyzeParams(task=spec.token, top_n=top_n, language=language))
    return check_params(analysis, AnalyzeParams(task=_variant(name, spec, config).token))


def _variant(name: str, spec: TaskSpec, config: dict[str, Any]) -> TaskSpec:
    """The task a seed task's `config` picks: the caption's detail, OCR with regions."""
    if name == "image-captioning":
        detail = config.get("detail", "basic")
        if not isinstance(detail, str) or detail not in _CAPTION_DETAIL:  # [] or {} are unhashable
            raise InvalidInput(f"config.detail must be one of {', '.join(_CAPTION_DETAIL)}.", code="invalid_config")
        return get_task(_CAPTION_DETAIL[detail])
    if name == "optical-character-recognition":
        regions = config.get("regions", False)
        if not isinstance(regions, bool):
            raise InvalidInput("config.regions must be true or false.", code="invalid_config")
        return get_task("OCR_WITH_REGION") if regions else spec
    return spec


# -- answers --------------------------------------------------------------------------------------------------
def scores_by_label(entry: dict[str, Any]) -> dict[str, float]:
    """label → probability from one image's zero-shot answer (`{"result": {label: p}}`)."""
    result = entry.get("result")
    return {str(k): float(v) for k, v in result.items()} if isinstance(result, dict) else {}


def seed_output(name: str, spec: TaskSpec, entry: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """One image's answer in the seed's output shape (by what the task returns); a failed image gets the
    empty value."""
    failed = "error" in entry
    kind = spec.output_kind
    if kind is OutputKind.LABEL_SCORES:
        scores = scores_by_label(entry)
        # As stored with the job: rounded to 6 decimals (the seed sends the model's floats unrounded).
        return {"probabilities": [] if failed else [float(scores.get(label, 0.0)) for label in classes]}
    if kind is OutputKind.CLASSES:
        return {"predictions": entry.get("predictions", [])}
    if kind is OutputKind.BOXES:
        detections = entry.get("detections", [])
        return {
            "labels": [d["label"] for d in detections],
            "boxes": [[round(v) for v in d["xyxy"]] for d in detections],
            # Florence-2 scores boxes only when per-box scores are on; a box without one counts as found.
            "scores": [float(d.get("score", 1.0)) for d in detections],
        }
    if kind is OutputKind.TEXT:
        return {"caption" if name == "image-captioning" else "text": entry.get("text", "")}
    return {key: value for key, value in entry.items() if key not in ("name", "error")}


def seed_view(record: JobRecord, name: str, spec: TaskSpec) -> dict[str, Any]:
    raw = record.params.get("seed")
    seed = SeedInfo.model_validate(raw) if isinstance(raw, dict) else SeedInfo(task=name)
    result = record.result if isinstance(record.result, dict) else {}
    # Which model answered, from the results (the worker writes it); before that the one configured.
    model = result.get("model") or seed.served_model
    body: dict[str, Any] = {"id": record.id, "status": seed_state(record.status), "model": model}
    if record.status is JobStatus.COMPLETE and result:
        outputs = []
        for entry in result.get("results", []):
            output = seed_output(name, spec, entry, seed.classes or [])
            if "error" in entry:
                output["error"] = entry["error"]
            outputs.append(output)
        body["result"] = outputs if seed.batched else outputs[0]
    elif record.error is not None:
        body["error"] = record.error
    return body


def served_model(services: Services, spec: TaskSpec) -> str:
    """The model configured for `spec` (for the listings, before any job ran): its backend's model id."""
    manager = services.manager
    try:
        return str(manager.slot(manager.backend_name(spec)).backend.model_id or "")
    except AppError:
        return ""


# -- routes ---------------------------------------------------------------------------------------------------
async def _submit(request: Request, name: str, model: str, batched: bool, submitter: Submitter) -> JSONResponse:
    spec = seed_task(name)
    body = await intake.read_json_object(request)
    key = intake.check_idempotency_key(submitter.idempotency_key)
    fingerprint = intake.body_fingerprint(name, model, batched, body)
    parsed = parse_body(SeedBatch, body) if batched else parse_body(SeedJob, body)
    images = parsed.image if isinstance(parsed, SeedBatch) else [parsed.image]
    sources = intake.sources_from_json(images, submitter.api.settings)
    params = seed_params(name, spec, parsed.classes, parsed.config, submitter.services.analysis)
    # The configured model names a job until it has run; then the model that answered does.
    seed = SeedInfo(task=name, batched=batched, classes=parsed.classes, requested_model=model,
                    served_model=served_model(submitter.services, spec) or None)  # fmt: skip
    params = params.model_copy(update={"seed": seed})
    kind = params.kind if params.kind != ANALYZE else spec.job_kind or ANALYZE
    record, created = await intake.submit_job(submitter, key, kind, params, sources, fingerprint)
    headers = {"Location": f"/api/tasks/{name}/{'batched/' if batched else ''}jobs/{record.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    # 200, not 202: the seed's clients check for 200.
    return JSONResponse({"id": record.id, "status": seed_state(record.status)}, headers=headers)


async def _read(name: str, job_id: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
    spec = seed_task(name)
    record = await asyncio.to_thread(jobs.queue.get, job_id, principal.sub)
    seed = record.params.get("seed")
    if not isinstance(seed, dict) or seed.get("task") != name:
        raise NotFound(f"No job {job_id[:64]!r}.", code="job_not_found")
    return JSONResponse(seed_view(record, name, spec))


_CREATE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
_READ_ERRORS = error_responses(401, 404, 503)


def _add_task_routes(name: str, spec: TaskSpec) -> None:
    tags: list[str | Enum] = [f"{name} (vitrivr-compatible)"]

    async def create_batched(request: Request, model: str, submitter: SubmitterDep) -> JSONResponse:
        return await _submit(request, name, model, True, submitter)

    async def create_single(request: Request, model: str, submitter: SubmitterDep) -> JSONResponse:
        return await _submit(request, name, model, False, submitter)

    async def read_batched(job: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
        return await _read(name, job, principal, jobs)

    async def read_single(job: str, principal: PrincipalDep, jobs: JobsDep) -> JSONResponse:
        return await _read(name, job, principal, jobs)

    batched_model, single_model = job_response_model(name, spec, True), job_response_model(name, spec, False)
    # The batched path first: `{model:path}` would otherwise swallow `batched/<model>`.
    router.add_api_route(f"/{name}/batched/{{model:path}}/jobs", create_batched, methods=["POST"], tags=tags,
                         response_model=SeedJobStatus, responses=_CREATE_ERRORS, summary="New batched job",
                         operation_id=f"new_batched_job_{name}", openapi_extra=intake.json_body(SeedBatch))  # fmt: skip
    router.add_api_route(f"/{name}/{{model:path}}/jobs", create_single, methods=["POST"], tags=tags,
                         response_model=SeedJobStatus, responses=_CREATE_ERRORS, summary="New job",
                         operation_id=f"new_job_{name}", openapi_extra=intake.json_body(SeedJob))  # fmt: skip
    router.add_api_route(f"/{name}/batched/jobs/{{job}}", read_batched, methods=["GET"], tags=tags,
                         response_model=batched_model, responses=_READ_ERRORS, summary="Batched job results",
                         operation_id=f"get_batched_job_{name}")  # fmt: skip
    router.add_api_route(f"/{name}/jobs/{{job}}", read_single, methods=["GET"], tags=tags,
                         response_model=single_model | batched_model,
                         responses=_READ_ERRORS, summary="Job results", operation_id=f"get_job_{name}")  # fmt: skip


# Routes (and their OpenAPI description) for the seed tasks registered when the API is built; the handlers
# and listings read the registry when called.
for _name, _spec in seed_tasks().items():
    _add_task_routes(_name, _spec)


@router.get("", response_model=list[str], tags=["jobs (vitrivr-compatible)"], responses=error_responses(401),
            summary="Task names the seed-compatible job routes serve")  # fmt: skip
async def list_tasks(principal: PrincipalDep) -> list[str]:
    return list(seed_tasks())


@router.get("/{task}/models", response_model=list[str], tags=["jobs (vitrivr-compatible)"],
            responses=error_responses(401, 404), summary="The model that serves a task")  # fmt: skip
async def list_task_models(task: str, principal: PrincipalDep, services: ServicesDep) -> list[str]:
    return [served_model(services, seed_task(task))]


@listings.get("/api/models", response_model=list[str], responses=error_responses(401),
              summary="Models behind the seed-compatible job routes")  # fmt: skip
async def list_models(principal: PrincipalDep, services: ServicesDep) -> list[str]:
    return list(dict.fromkeys(m for spec in seed_tasks().values() if (m := served_model(services, spec))))
