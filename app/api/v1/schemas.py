"""Request and response models of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

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
LabelsField = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=100)]] | None,
    Field(
        max_length=20,
        description="Open-vocabulary detection only: the classes to find (sent to the model joined with `<and>`); "
        "instead of `text`",
        examples=[["cat", "dog"]],
    ),
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
    min_score: MinScoreField = None
    annotate: bool = Field(False, description="Also return the image with the result drawn on it, as base64 PNG")
    images: list[ImageInput] = Field(min_length=1, description="One or more images; results come back in this order")


class AnalyzeForm(BaseModel):
    """The non-file fields of the multipart form (validated like the JSON body)."""

    task: TaskField
    text: TextField = None
    region: str | None = Field(None, max_length=200, description="x1,y1,x2,y2 in pixels")
    labels: str | None = Field(None, max_length=2000, description="Open-vocabulary classes, comma-separated")
    min_score: MinScoreField = None
    annotate: bool = False


class AnalyzeResponse(BaseModel):
    results: list[dict[str, Any]] = Field(
        description="One entry per image in input order: the typed result (`kind`, `task`, `image_wh`, ...) plus "
        "`name` and, with annotate, `annotated_png`; or `{name, error: {code, message}}` for an image that failed."
    )


class TaskList(BaseModel):
    tasks: list[dict[str, Any]]


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
        "labels": {"type": "string", "maxLength": 2000, "description": "open-vocabulary classes, comma-separated"},
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


def analyze_request_body() -> dict[str, Any]:
    """`openapi_extra` for the analyze route: the body is read by hand, so its schema is declared here."""
    json_schema = AnalyzeRequest.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": inline_refs(json_schema, json_schema.get("$defs", {}))},
                "multipart/form-data": {"schema": MULTIPART_SCHEMA},
            },
        }
    }
