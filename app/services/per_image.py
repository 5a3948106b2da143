"""Per-image answers, shared by the synchronous API routes and the jobs.

A request's images are decoded first; those that decoded go to the model as one batch, and the
batch's outcomes are merged back in input order. Each image then answers with its result, or with
`{"name", "error"}` while the others succeed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from app.core.errors import AppError, InferenceError, error_entry
from app.core.images import LoadedImage
from app.core.results import AnyResult


class SerializableResult(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


ResultT = TypeVar("ResultT", bound=SerializableResult)
ResultT_co = TypeVar("ResultT_co", bound=SerializableResult, covariant=True)


class Outcome(Protocol[ResultT_co]):
    """What a service returns for one image (`ImageOutcome`, `ClassificationOutcome`)."""

    @property
    def result(self) -> ResultT_co | None: ...

    @property
    def error(self) -> AppError | None: ...


@dataclass
class ImageReport(Generic[ResultT]):
    """What became of one input image."""

    name: str
    image: LoadedImage | None = None
    result: ResultT | None = None
    error: AppError | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # added to a success entry: annotated_png, analysis

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return self.error_entry()
        return {"name": self.name, **self.result.to_dict(), **self.extra}

    def error_entry(self) -> dict[str, Any]:
        return error_entry(self.name, self.failure())

    def failure(self) -> AppError:
        """The error this image answers with when it has no result."""
        return self.error or InferenceError("No result.")


def merge_outcomes(
    names: Sequence[str], items: Sequence[LoadedImage | AppError], outcomes: Iterable[Outcome[ResultT]]
) -> list[ImageReport[ResultT]]:
    """`outcomes` belong to the items that decoded, in order; an item that did not keeps its error."""
    remaining = iter(outcomes)
    reports: list[ImageReport[ResultT]] = []
    for name, item in zip(names, items, strict=True):
        if isinstance(item, AppError):
            reports.append(ImageReport(name, error=item))
            continue
        outcome = next(remaining, None)
        if outcome is None:  # the service answered fewer images than it was given
            reports.append(ImageReport(name, image=item))
        else:
            reports.append(ImageReport(name, image=item, result=outcome.result, error=outcome.error))
    return reports


def annotate(reports: Sequence[ImageReport[AnyResult]]) -> None:
    """Draw each result on its image and attach the picture as base64 PNG (`annotated_png`)."""
    from app.rendering.drawing import Annotator, to_png_bytes  # matplotlib and fonts: only when someone asks

    annotator = Annotator()
    for report in reports:
        if report.image is not None and report.result is not None:
            drawn = annotator.annotate(report.image.image, report.result)
            report.extra["annotated_png"] = base64.b64encode(to_png_bytes(drawn)).decode("ascii")
