"""Request models of `POST /api/v1/classify`: strict, like `/api/v1/analyze`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.v1.schemas import ImageInput, files_schema, request_body
from app.core.task_inputs import MAX_TOP_N


class ClassifyRequest(BaseModel):
    """JSON body of `POST /api/v1/classify`."""

    model_config = ConfigDict(extra="forbid")
    images: list[ImageInput] = Field(min_length=1, description="One or more images; results come back in this order")
    numberofpredictions: int = Field(3, ge=1, le=MAX_TOP_N, description="Predictions per image, best first")
    language: str = Field("en", min_length=1, max_length=20, description="Language of the class names: en, de")


class ClassifyForm(BaseModel):
    numberofpredictions: int = Field(3, ge=1, le=MAX_TOP_N)
    language: str = Field("en", min_length=1, max_length=20)


def classify_body() -> dict[str, Any]:
    fields = {
        "numberofpredictions": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_N},
        "language": {"type": "string", "minLength": 1, "maxLength": 20},
    }
    return request_body(ClassifyRequest, files_schema("files", fields))
