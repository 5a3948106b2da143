"""Request shapes of the seed classification routes (`/api/classify[/{model}]`, `/api/zero-shot`).

They accept what clients of the systems this app replaces already send, and ignore keys they do not
know (the v1 shapes in app/api/v1/schemas_classify.py are strict).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from app.api.v1.schemas import (
    MAX_URL_CHARS,
    MULTI_LABEL_TEXT,
    CategoriesField,
    ImageURL,
    LabelText,
    TemplatesField,
    files_schema,
    request_body,
)
from app.core.task_inputs import MAX_LABELS


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


ZeroShotImage = str | ImageURL  # base64, a data URL, or {"url": ...}


class ZeroShotRequestBody(BaseModel):
    """JSON body of `POST /api/zero-shot`: `image_data` (one image) or `images` (a batch), and labels."""

    model_config = ConfigDict(extra="ignore")
    image_data: str | None = Field(None, min_length=1, description="The image, base64 (or a data URL)")
    images: list[ZeroShotImage] | None = Field(
        None, min_length=1, description="A batch instead of image_data: base64 strings, data URLs or {url}"
    )
    labels: list[LabelText] = Field(min_length=1, max_length=MAX_LABELS, description="Candidate labels (phrases)")
    categories: CategoriesField = None
    multi_label: bool = Field(False, description=MULTI_LABEL_TEXT)
    templates: TemplatesField = None

    @model_validator(mode="after")
    def _one_source(self) -> ZeroShotRequestBody:
        if (self.image_data is None) == (self.images is None):
            raise ValueError("give exactly one of `image_data` or `images`")
        return self


def seed_classify_body() -> dict[str, Any]:
    return request_body(SeedClassifyRequest, files_schema("file"))


def zero_shot_body() -> dict[str, Any]:
    return request_body(ZeroShotRequestBody)
