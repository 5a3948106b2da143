"""Job submission shared by the jobs API (`/api/v1/jobs`) and the seed-compatible job routes (`/api/tasks`).

Reading the JSON body, the Idempotency-Key, the images (URLs fetched and every image checked now: the
queue stores the bytes, so a job never depends on a URL that may have changed by the time a worker
reaches it), the rate-limit charge (one unit per model run on one image) and the queueing itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from pydantic import BaseModel

from app.api.auth import Principal, PrincipalDep
from app.api.deps import ApiState, ApiStateDep, ServicesDep
from app.api.intake import (
    ImageSource,
    check_image_count,
    checked_bytes,
    parse_json_object,
    require_json,
    source_from_json,
)
from app.api.v1.schemas import ImageInput, inline_refs
from app.core.config import Settings
from app.core.errors import AppError, InvalidInput, ModelUnavailable
from app.core.images import ImageLimits
from app.jobs.callbacks import CallbackPoster
from app.jobs.kinds import AnyParams
from app.jobs.records import IdempotencyConflict, JobInput, JobRecord
from app.jobs.worker import JobSystem
from app.services.container import Services
from app.services.ratelimit import work_cost

MAX_IDEMPOTENCY_KEY_CHARS = 255


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


def json_body(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body by hand: the schema of `models` (any of)."""
    schemas = []
    for model in models:
        schema = model.model_json_schema()
        schemas.append(inline_refs(schema, schema.get("$defs", {})))
    body = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


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
    params: AnyParams,
    sources: Sequence[ImageSource],
    fingerprint: str,
    callback_url: str | None = None,
) -> tuple[JobRecord, bool]:
    """Queue the job (`key`: the checked Idempotency-Key), or return the live job a retry refers to.

    `params` are already checked (`app.jobs.kinds.check_params`): nothing invalid reaches the queue."""
    owner, queue = submitter.principal.sub, submitter.jobs.queue
    if key is not None:
        existing = await asyncio.to_thread(queue.find, owner, key)
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise IdempotencyConflict()
            return existing, False  # a retry: no new rate-limit cost, no fetching
    # The synchronous routes' cost rule (a unit per model run on one image); a job without images still
    # takes its place in the queue, so it costs one.
    submitter.services.limiter.hit(owner, cost=max(1, work_cost(len(sources), [params.spec()])))
    if callback_url is not None:
        if not isinstance(callback_url, str) or not callback_url:
            raise InvalidInput("callback_url must be an http(s) URL.", code="invalid_url")
        await CallbackPoster(submitter.api.fetcher.policy).check(callback_url)
    inputs, input_errors = await stored_inputs(sources, submitter.api)
    if input_errors:
        params = params.model_copy(update={"input_errors": input_errors})
    stored = params.stored()
    return await asyncio.to_thread(queue.submit, owner, kind, stored, inputs, key, callback_url, fingerprint)
