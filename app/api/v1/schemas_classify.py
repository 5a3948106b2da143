"""Request models of the classification routes (`/api/classify`, `/api/v1/classify`, `/api/zero-shot`).

The two seed-compatible routes (`/api/classify`, `/api/zero-shot`) accept the shapes clients of the
systems this app replaces already send, and ignore keys they do not know; `/api/v1/classify`
follows `/api/v1/analyze` and is strict.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from app.api.v1.schemas import MAX_URL_CHARS, ImageInput, ImageURL, inline_refs
from app.core.task_inputs import MAX_LABEL_CHARS, MAX_LABELS, MAX_TEMPLATES, MAX_TOP_N

LabelText = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]


class SeedImage(BaseModel):
    """One image of `POST /api/classify`: `{"url": ...}` or `{"file": <base64>}`."""

    model_config = ConfigDict(extra="ignore")
    url: str | None = Field(None, min_length=1, max_length=MAX_URL_CHARS, description="http(s) URL of an image")
    file: str | None = Field(None, min_length=1, description="The image file's bytes, base64-encoded")

    @model_validator(mode="after")
    def _one_source(self) -> SeedImage:
        if (self.url is None) == (self.file is None):
            raise ValueError("give exactly one of `url` or `file`")
        return self


class SeedClassifyRequest(RootModel[list[SeedImage]]):
    root: list[SeedImage] = Field(description='`[]` answers `{"responses": []}`, as the seed did')


class ClassifyRequest(BaseModel):
    """JSON body of `POST /api/v1/classify`."""

    model_config = ConfigDict(extra="forbid")
    images: list[ImageInput] = Field(min_length=1, description="One or more images; results come back in this order")
    numberofpredictions: int = Field(3, ge=1, le=MAX_TOP_N, description="Predictions per image, best first")
    language: str = Field("en", min_length=1, max_length=20, description="Language of the class names: en, de")


class ClassifyForm(BaseModel):
    numberofpredictions: int = Field(3, ge=1, le=MAX_TOP_N)
    language: str = Field("en", min_length=1, max_length=20)


ZeroShotImage = str | ImageURL  # base64, a data URL, or {"url": ...}


class ZeroShotRequestBody(BaseModel):
    """JSON body of `POST /api/zero-shot`: `image_data` (one image) or `images` (a batch), and labels."""

    model_config = ConfigDict(extra="ignore")
    image_data: str | None = Field(None, min_length=1, description="The image, base64 (or a data URL)")
    images: list[ZeroShotImage] | None = Field(
        None, min_length=1, description="A batch instead of image_data: base64 strings, data URLs or {url}"
    )
    labels: list[LabelText] = Field(min_length=1, max_length=MAX_LABELS, description="Candidate labels (phrases)")
    categories: dict[str, LabelText] | None = Field(
        None,
        description="label → category: a category's probability is the sum over its labels (the highest one "
        "with multi_label)",
    )
    multi_label: bool = Field(False, description="Independent score per label instead of one softmax over labels")
    templates: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, min_length=1, max_length=MAX_TEMPLATES, description="Templates with `{}`; default: the labels as given"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ZeroShotRequestBody:
        if (self.image_data is None) == (self.images is None):
            raise ValueError("give exactly one of `image_data` or `images`")
        return self


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    inlined: dict[str, Any] = inline_refs(schema, schema.get("$defs", {}))
    return inlined


def _body(json_model: type[BaseModel], multipart: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _json_schema(json_model)}}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": True, "content": content}}


def _files_schema(field: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [field],
        "properties": {
            **(extra or {}),
            field: {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
        },
    }


def seed_classify_body() -> dict[str, Any]:
    return _body(SeedClassifyRequest, _files_schema("file"))


def classify_body() -> dict[str, Any]:
    fields = {
        "numberofpredictions": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_N},
        "language": {"type": "string", "minLength": 1, "maxLength": 20},
    }
    return _body(ClassifyRequest, _files_schema("files", fields))


def zero_shot_body() -> dict[str, Any]:
    return _body(ZeroShotRequestBody)
