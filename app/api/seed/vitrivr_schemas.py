"""Request and answer shapes of the vitrivr-compatible job routes (`/api/tasks/...`).

They follow vitrivr feature-extraction-server's OpenAPI description: a job is created with HTTP 200
and `{"id", "status"}`, statuses are `starting|running|complete|failed`, a batched body sends
`image` as a list and a batched answer is a list of per-image objects. Unknown body fields and
`config` keys are passed over, as that server passes them on to models that ignore them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from app.core.tasks import OutputKind, TaskSpec, all_tasks
from app.jobs.records import JobStatus

MAX_CLASSES = 100
MAX_IMAGE_FIELD_CHARS = 40 * 1024 * 1024

SeedState = Literal["starting", "running", "complete", "failed"]
_STATES: dict[JobStatus, SeedState] = {
    JobStatus.QUEUED: "starting",
    JobStatus.RUNNING: "running",
    JobStatus.COMPLETE: "complete",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "failed",  # the seed has no cancel; a cancelled job did not complete
}


def seed_state(status: JobStatus) -> SeedState:
    return _STATES[status]


ImageField = Field(min_length=1, max_length=MAX_IMAGE_FIELD_CHARS, description="data URL, base64 or http(s) URL")


class SeedJob(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: str = ImageField
    classes: list[str] | None = Field(None, max_length=MAX_CLASSES, description="zero-shot only; in answer order")
    config: dict[str, Any] = Field(default_factory=dict, description="task options; unknown keys are ignored")


class SeedBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: list[str] = Field(min_length=1, description="data URLs, base64 or http(s) URLs (`images` also accepted)")
    classes: list[str] | None = Field(None, max_length=MAX_CLASSES, description="zero-shot only; the same for all")
    config: dict[str, Any] = Field(default_factory=dict, description="task options; unknown keys are ignored")

    @model_validator(mode="before")
    @classmethod
    def _images_alias(cls, data: Any) -> Any:
        # Earlier releases of this server documented `images`; keep reading it.
        if isinstance(data, dict) and "image" not in data and "images" in data:
            return {**data, "image": data["images"]}
        return data


class SeedJobStatus(BaseModel):
    id: str
    status: SeedState


class ZeroShotOutput(BaseModel):
    probabilities: list[float]


class ClassificationOutput(BaseModel):
    predictions: list[dict[str, Any]]


class CaptionOutput(BaseModel):
    caption: str


class DetectionOutput(BaseModel):
    labels: list[str]
    boxes: list[list[int]] = Field(description="xyxy in pixels")
    scores: list[float]


class OcrOutput(BaseModel):
    text: str


def seed_tasks() -> dict[str, TaskSpec]:
    """Seed task name → the registry entry it runs: every task with a `seed_name`, read from the registry now."""
    return {spec.seed_name: spec for spec in all_tasks() if spec.seed_name}


# The seed's output shape follows what a task returns; a caption is text under another key.
_OUTPUTS: dict[OutputKind, type[BaseModel]] = {
    OutputKind.LABEL_SCORES: ZeroShotOutput,
    OutputKind.CLASSES: ClassificationOutput,
    OutputKind.BOXES: DetectionOutput,
    OutputKind.TEXT: OcrOutput,
}
_OUTPUTS_BY_NAME: dict[str, type[BaseModel]] = {"image-captioning": CaptionOutput}


def output_model(name: str, spec: TaskSpec) -> type[BaseModel] | None:
    """The seed output shape of `spec` under its seed name, or None: the per-image result as this API gives it."""
    return _OUTPUTS_BY_NAME.get(name) or _OUTPUTS.get(spec.output_kind)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def job_response_model(name: str, spec: TaskSpec, batched: bool) -> type[BaseModel]:
    """What GET answers for `name`: `result` is the task's output (a list of them when batched)."""
    output: Any = output_model(name, spec) or dict[str, Any]
    result_type: Any = list[output] if batched else output
    model_name = f"{'Batched' if batched else ''}JobResponse{_pascal(name)}"
    return create_model(
        model_name,
        id=(str, ...),
        status=(SeedState, ...),
        result=(result_type | None, None),
        model=(str | None, None),
        error=(dict[str, Any] | None, None),
    )
