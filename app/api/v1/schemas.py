"""Request and response models of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.v1.schemas_results import ClassifyEntry, ImageEntry
from app.core.task_inputs import MAX_LABEL_CHARS, MAX_LABELS, MAX_TEMPLATE_CHARS, MAX_TEMPLATES, MAX_TOP_N
from app.core.tasks import all_tasks

MAX_URL_CHARS = 2048
DATA_URL_PATTERN = r"^data:"

TaskField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="Task token (`<OD>`), short name (`OD`) or alias (`caption`); see GET /api/v1/tasks.",
        examples=["<CAPTION>", "OD"],
    ),
]
TextField = Annotated[
    str | None, Field(max_length=1000, description="Text input for text tasks (grounding, OVD, segmentation)")
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
LabelText = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
LabelsField = Annotated[
    list[LabelText] | None,
    Field(
        max_length=MAX_LABELS,
        description="What the task's input kind says: the labels to score (zero-shot, input `labels`), or the "
        "classes to find (open-vocabulary detection, at most 20, sent to the model joined with `<and>`; "
        "instead of `text`). Other tasks take none.",
        examples=[["cat", "dog"]],
    ),
]
CategoriesField = Annotated[
    dict[str, LabelText] | None,
    Field(
        description="Zero-shot: label → category; a category's probability is the sum over its labels (the "
        "highest one with multi_label)",
    ),
]
TemplatesField = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)]] | None,
    Field(
        min_length=1,
        max_length=MAX_TEMPLATES,
        description="Zero-shot: templates with `{}` (`a photo of {}`), averaged; default: the labels as given",
    ),
]
MULTI_LABEL_TEXT = "Zero-shot: an independent score per label instead of one softmax over the labels"
TopNField = Annotated[
    int | None, Field(ge=1, le=MAX_TOP_N, description="Classification: predictions per image, best first (3)")
]
LanguageField = Annotated[
    str | None,
    Field(min_length=1, max_length=20, description="Classification: language of the class names, `en` or `de`"),
]
MinScoreField = Annotated[
    float | None,
    Field(
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Drop boxes, masks and text regions whose `score` is below this (0..1). The score is the mean "
        "probability the model gave the instance's own tokens, not a calibrated probability.",
    ),
]


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1, max_length=MAX_URL_CHARS, description="http(s) URL of a public image", examples=["https://…"]
    )


class ImageBase64(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base64: str = Field(min_length=1, description="The image file's bytes, base64-encoded")


DataURL = Annotated[
    str, Field(pattern=DATA_URL_PATTERN, description="`data:image/png;base64,...`", examples=["data:image/png;base64,"])
]
ImageInput = ImageURL | ImageBase64 | DataURL


class AnalyzeRequest(BaseModel):
    """JSON body of POST /api/v1/analyze."""

    model_config = ConfigDict(extra="forbid")
    task: TaskField
    text: TextField = None
    region: list[FiniteFloat] | None = Field(
        None, min_length=4, max_length=4, description="Region x1,y1,x2,y2 in pixels, for region tasks"
    )
    labels: LabelsField = None
    categories: CategoriesField = None
    multi_label: bool | None = Field(None, description=MULTI_LABEL_TEXT)
    templates: TemplatesField = None
    top_n: TopNField = None
    language: LanguageField = None
    min_score: MinScoreField = None
    annotate: bool = Field(False, description="Also return the image with the result drawn on it, as base64 PNG")
    images: list[ImageInput] = Field(min_length=1, description="One or more images; results come back in this order")


class AnalyzeForm(BaseModel):
    """The non-file fields of the multipart form (validated like the JSON body)."""

    task: TaskField
    text: TextField = None
    region: str | None = Field(None, max_length=200, description="x1,y1,x2,y2 in pixels")
    labels: str | None = Field(None, max_length=20_000, description="Labels or classes, comma-separated")
    multi_label: bool | None = None
    top_n: TopNField = None
    language: LanguageField = None
    min_score: MinScoreField = None
    annotate: bool = False


class AnalyzeResponse(BaseModel):
    results: list[ImageEntry] = Field(
        description="One entry per image in input order: the typed result (`kind`, `task`, `image_wh`, ...) plus "
        "`name` and, with annotate, `annotated_png`; or `{name, error: {code, message}}` for an image that failed."
    )


class ClassifyResponse(BaseModel):
    results: list[ClassifyEntry] = Field(description="One entry per image in input order, or its error")


class TaskEntry(BaseModel):
    token: str = Field(description="The task's token (`<OD>`); `task` accepts it, the short name or an alias")
    short_name: str
    name: str
    description: str
    input: str = Field(description="What it takes besides the image: none, text, region or labels")
    output: str = Field(description="What it returns: text, boxes, polygons, ocr, mixed, classes, label_scores")
    aliases: list[str]
    backend: str | None = Field(description="The backend that serves it here; null when none is configured")


class TaskList(BaseModel):
    tasks: list[TaskEntry]


class ModelList(BaseModel):
    models: list[dict[str, Any]]
    queue: dict[str, int]


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str
    models: list[dict[str, Any]]


MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["task", "files"],
    "properties": {
        "task": {"type": "string", "minLength": 1, "maxLength": 100, "examples": [all_tasks()[0].token]},
        "text": {"type": "string", "maxLength": 1000},
        "region": {"type": "string", "maxLength": 200, "description": "x1,y1,x2,y2 in pixels"},
        "labels": {
            "type": "string",
            "maxLength": 20_000,
            "description": "labels to score (zero-shot) or classes to find (open-vocabulary detection), "
            "comma-separated",
        },
        "multi_label": {"type": "boolean", "description": MULTI_LABEL_TEXT},
        "top_n": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_N},
        "language": {"type": "string", "minLength": 1, "maxLength": 20},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
        "annotate": {"type": "boolean"},
        "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
    },
}


def inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace `#/$defs/X` references by their definitions (OpenAPI resolves `#` at the document root)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [inline_refs(item, defs) for item in node]
    return node


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    inlined: dict[str, Any] = inline_refs(schema, schema.get("$defs", {}))
    return inlined


def request_body(json_model: type[BaseModel], multipart: dict[str, Any] | None = None) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body by hand: the JSON model (and a multipart form)."""
    content: dict[str, Any] = {"application/json": {"schema": _json_schema(json_model)}}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": True, "content": content}}


def files_schema(field: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A multipart form with one or more files under `field`, plus the text fields `extra`."""
    return {
        "type": "object",
        "required": [field],
        "properties": {
            **(extra or {}),
            field: {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
        },
    }


def analyze_request_body() -> dict[str, Any]:
    """`openapi_extra` for the analyze route: the body is read by hand, so its schema is declared here."""
    return request_body(AnalyzeRequest, MULTIPART_SCHEMA)
