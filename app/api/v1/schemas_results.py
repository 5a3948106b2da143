"""The per-image entries of `/api/v1/analyze` and `/api/v1/classify` answers, for the OpenAPI document.

Each entry is a result's `to_dict()` (one shape per `kind`, app/core/results.py and
app/core/classification_results.py) plus `name` and what the route adds (`annotated_png`,
`analysis`), or `{name, error}` for an image that failed. The routes answer with those dicts
directly; these models only describe them, so they accept keys they do not list.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Number = float  # integers stay integers in JSON; both are `number`


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="The image's name: the upload's file name, or `images[i]`")
    image_wh: list[int] = Field(min_length=2, max_length=2, description="Width and height in pixels")


class _TaskEntry(_Entry):
    task: str = Field(description="The task's token")
    region: list[Number] | None = Field(None, description="The region the task looked at (region tasks)")
    annotated_png: str | None = Field(None, description="With annotate: the image with the result drawn, base64 PNG")


class _RunEntry(_Entry):
    """Classification results say which model answered and how long it took."""

    duration: Number = Field(description="Seconds of model work for the batch this image was part of")
    repository: str
    version: str = Field(description="This app's version")
    library: str = Field(description="The library that ran the model, with its version")
    model: str = Field(description="The model that answered")


class TextEntry(_TaskEntry):
    kind: Literal["text"]
    text: str


class Detection(BaseModel):
    id: int
    label: str
    xyxy: list[Number] = Field(min_length=4, max_length=4)
    score: Number | None = None


class DetectionsEntry(_TaskEntry):
    kind: Literal["detections"]
    caption: str | None = Field(None, description="Caption + grounding: the caption whose phrases the boxes ground")
    detections: list[Detection]


class Instance(BaseModel):
    id: int
    label: str
    polygons: list[list[Number]] = Field(description="Flat x,y lists, one per part of the instance")
    xyxy: list[Number] | None
    score: Number | None = None


class SegmentationEntry(_TaskEntry):
    kind: Literal["segmentation"]
    instances: list[Instance]


class OCRRegion(BaseModel):
    id: int
    text: str
    quad: list[Number] = Field(min_length=8, max_length=8)
    score: Number | None = None


class OCREntry(_TaskEntry):
    kind: Literal["ocr"]
    text: str
    regions: list[OCRRegion]


class Prediction(BaseModel):
    class_id: str = Field(alias="class", description="WordNet synset id (`n02123045`) or the model's label id")
    name: str
    probability: Number


class ClassificationEntry(_RunEntry):
    kind: Literal["classification"]
    language: str
    predictions: list[Prediction]


class ZeroShotEntry(_RunEntry):
    kind: Literal["zero_shot"]
    multi_label: bool
    result: dict[str, Number] = Field(description="Probability per label, in the order given")
    categories: dict[str, Number] | None = Field(None, description="Probability per category, when given")
    templates: list[str] | None = None


class ImageError(BaseModel):
    code: str
    message: str


class ErrorEntry(BaseModel):
    name: str
    error: ImageError


ResultEntry = Annotated[
    TextEntry | DetectionsEntry | SegmentationEntry | OCREntry | ClassificationEntry | ZeroShotEntry,
    Field(discriminator="kind"),
]
ImageEntry = ResultEntry | ErrorEntry
ClassifyEntry = ClassificationEntry | ErrorEntry
