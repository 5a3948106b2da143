"""Catalogue and operations endpoints: tasks, models, liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__
from app.api.auth import PrincipalDep
from app.api.deps import ApiStateDep, ServicesDep
from app.api.errors import error_responses
from app.api.v1.schemas import Health, ModelList, Readiness, TaskEntry, TaskList
from app.core.errors import UnknownTask
from app.core.tasks import TaskSpec, all_tasks
from app.models.manager import ModelManager, ModelState

api_v1 = APIRouter(prefix="/api/v1", tags=["catalogue"], responses=error_responses(401, 429, 503))
ops = APIRouter(tags=["operations"])


@api_v1.get("/tasks", response_model=TaskList, summary="The tasks this server can run, and the backend of each")
async def list_tasks(principal: PrincipalDep, services: ServicesDep) -> TaskList:
    # Read at request time: a task registered after start-up is listed too.
    return TaskList(tasks=[_task_entry(spec, services.manager) for spec in all_tasks()])


def _task_entry(spec: TaskSpec, manager: ModelManager) -> TaskEntry:
    try:
        backend: str | None = manager.backend_name(spec)  # the routed one (OCR_BACKEND=rapidocr: OCR → rapidocr)
    except UnknownTask:
        backend = None
    return TaskEntry(**spec.to_dict(), aliases=list(spec.aliases), backend=backend)


@api_v1.get("/models", response_model=ModelList, summary="Models with their state, device and dtype")
async def list_models(principal: PrincipalDep, services: ServicesDep) -> ModelList:
    manager = services.manager
    return ModelList(
        models=manager.status(), queue={"depth": manager.queue_depth, "capacity": manager.settings.max_queue_size}
    )


@ops.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok", version=__version__)


@ops.get(
    "/readyz",
    response_model=Readiness,
    responses=error_responses(503),
    summary="Readiness: 200 once the model is loaded, 503 before (never triggers loading)",
)
async def readyz(services: ServicesDep) -> Response:
    # The model loads at start-up (PRELOAD=true) or on the first analysis; a probe must stay cheap.
    manager = services.manager
    slot = manager.slot(manager.primary)
    models = manager.status()
    if slot.state is ModelState.READY:
        return JSONResponse(Readiness(status="ready", models=models).model_dump())
    code = f"model_{slot.state.value}"
    if slot.state is ModelState.FAILED:
        message = f"The model failed to load: {slot.error.message if slot.error else 'unknown error'}"
        # The load error's own code (`model_missing`, `model_unreadable`, ...), as the API answers it.
        code = slot.error.code if slot.error else "model_load_failed"
    elif slot.state is ModelState.LOADING:
        message = "The model is loading."
    else:
        message = "The model is not loaded yet (PRELOAD=false: the first analysis loads it)."
    return JSONResponse({"error": {"code": code, "message": message}, "models": models}, 503)


@ops.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def metrics(api: ApiStateDep) -> Response:
    return Response(api.metrics.render(), media_type=CONTENT_TYPE_LATEST)
