"""Job parameters as typed models: one per job kind, keyed on `kind`, stored as JSON in the job record.

Kinds come from the task registry at call time: `analyze` runs any registered task, and every task with a
`job_kind` (`classify` → CLASSIFY, `zero-shot` → ZERO_SHOT) is also a kind of its own. The two legacy
kinds keep their request bodies and stored shapes (`top_n`/`language`; `labels`/`categories`/...), so
records written by earlier versions load unchanged; a new task's `job_kind` takes the analyze body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.core.errors import InvalidInput
from app.core.task_inputs import TaskFields, TaskInput, ZeroShotRequest
from app.core.tasks import CLASSIFY, REGISTRY, ZERO_SHOT, TaskSpec, all_tasks, get_task

ANALYZE = "analyze"
# The legacy kinds' own names: their stored params and bodies are not the analyze ones.
CLASSIFY_KIND = CLASSIFY.job_kind or "classify"
ZERO_SHOT_KIND = ZERO_SHOT.job_kind or "zero-shot"


class SeedInfo(BaseModel):
    """What a seed-compatible (vitrivr) route needs to answer in its own shape."""

    model_config = ConfigDict(extra="ignore")
    task: str
    batched: bool = False
    classes: list[str] | None = None
    requested_model: str | None = None
    served_model: str | None = None  # the model configured at submission; answers prefer the result's


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a field an earlier version stored is passed over
    # Images that failed at submission, by input index: {"code", "message", "status"}.
    input_errors: dict[str, dict[str, Any]] | None = None
    seed: SeedInfo | None = None

    def spec(self) -> TaskSpec:
        raise NotImplementedError

    def task_input(self) -> TaskInput:
        raise NotImplementedError

    def stored(self) -> dict[str, Any]:
        """The JSON kept in the job record (`kind` is the record's own field)."""
        return self.model_dump(mode="json", exclude={"kind"}, exclude_none=True)


class AnalyzeParams(_Params):
    """Any registered task; the fields a task does not take stay unset."""

    kind: Literal["analyze"] = "analyze"
    task: str  # the task token
    text: str | None = None
    region: list[float] | None = None
    annotate: bool = False
    min_score: float | None = None
    labels: list[str] | None = None  # tasks that score labels (input LABELS)
    categories: dict[str, str] | None = None
    multi_label: bool | None = None
    templates: list[str] | None = None
    top_n: int | None = None  # tasks that rank classes (output CLASSES)
    language: str | None = None

    def spec(self) -> TaskSpec:
        return get_task(self.task)

    def task_input(self) -> TaskInput:
        spec = self.spec()
        if self._label_options() and not spec.needs_labels:
            raise InvalidInput(f"{spec.name} takes no categories, multi_label or templates.",
                               code="unexpected_labels")  # fmt: skip
        fields = TaskFields(self.text, self.region, self.labels, self.categories, self.multi_label, self.templates,
                            self.top_n, self.language, self.min_score)  # fmt: skip
        return fields.task_input(spec)

    def _label_options(self) -> bool:
        return self.categories is not None or self.multi_label is not None or self.templates is not None


class ClassifyParams(_Params):
    """The `classify` kind: ImageNet top-N, stored as `{"top_n", "language"}`."""

    kind: Literal["classify"] = "classify"
    top_n: int
    language: str

    def spec(self) -> TaskSpec:
        return CLASSIFY

    def task_input(self) -> TaskInput:
        return TaskInput(top_n=self.top_n, language=self.language)


class ZeroShotParams(_Params):
    """The `zero-shot` kind: labels you give, stored as `{"labels", "categories", "multi_label", "templates"}`."""

    kind: Literal["zero-shot"] = "zero-shot"
    labels: list[str]
    categories: dict[str, str] | None = None
    multi_label: bool = False
    templates: list[str] | None = None

    def spec(self) -> TaskSpec:
        return ZERO_SHOT

    def task_input(self) -> TaskInput:
        return TaskInput(labels=ZeroShotRequest.create(self.labels, self.categories, self.multi_label, self.templates))

    def stored(self) -> dict[str, Any]:
        # Earlier versions always wrote `categories` (null when none): keep the shape.
        return {**super().stored(), "categories": self.categories}


JobParams = Annotated[AnalyzeParams | ClassifyParams | ZeroShotParams, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[AnalyzeParams | ClassifyParams | ZeroShotParams] = TypeAdapter(JobParams)
_TYPED_KINDS = (CLASSIFY_KIND, ZERO_SHOT_KIND)


def job_kinds() -> dict[str, TaskSpec | None]:
    """Every job kind → the task it runs (None: `analyze`, whose task is a parameter); from the registry now."""
    kinds: dict[str, TaskSpec | None] = {ANALYZE: None}
    kinds.update({spec.job_kind: spec for spec in all_tasks() if spec.job_kind})
    return kinds


def normalize_kind(value: object) -> str:
    """A job kind by its name or an alias (`zero_shot`, `classification`) of the task it runs."""
    name = value.strip().lower() if isinstance(value, str) else ""
    kinds = job_kinds()
    if name in kinds:
        return name
    spec = next((s for s in kinds.values() if s is not None and name and _same_task(s, name)), None)
    if spec is None or spec.job_kind is None:
        raise InvalidInput(f"'kind' must be one of {', '.join(kinds)}.", code="unknown_job_kind")
    return spec.job_kind


def _same_task(spec: TaskSpec, name: str) -> bool:
    return REGISTRY.find(name) is spec


def load_params(kind: str, stored: dict[str, Any]) -> AnalyzeParams | ClassifyParams | ZeroShotParams:
    """A job record's params (any version) as the model of its kind."""
    model_kind = kind if kind in _TYPED_KINDS else ANALYZE
    data = {**stored, "kind": model_kind}
    if model_kind == ANALYZE and "task" not in data and (spec := job_kinds().get(kind)) is not None:
        data["task"] = spec.token
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:  # field names only: the values are the client's
        # A discriminated union's error location starts with the kind: the field comes after it.
        fields = ", ".join(sorted({str(err["loc"][1]) for err in exc.errors() if len(err["loc"]) > 1}))
        raise InvalidInput(f"The job's parameters cannot be read ({fields}).", code="invalid_job_params") from None


def describe(kind: str, params: AnalyzeParams | ClassifyParams | ZeroShotParams) -> str:
    """For log lines: `analyze <OD>`, `classify`."""
    return f"{kind} {params.task}" if isinstance(params, AnalyzeParams) else kind
