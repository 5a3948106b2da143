"""An API request's task fields → the task's `TaskInput`; the task's input kind decides what each field means.

`labels` are the labels to score for a task that takes labels (zero-shot), the classes to find for
open-vocabulary detection, and refused by any other task; `categories`, `multi_label` and
`templates` only go with labels to score, `top_n` and `language` only with a task that ranks a fixed
set of classes (ImageNet). A field the task does not read is refused rather than ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.api.v1.schemas import AnalyzeRequest
from app.core.errors import InvalidInput
from app.core.geometry import XYXY
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.core.tasks import OutputKind, TaskSpec, text_with_classes

DEFAULT_TOP_N = 3
DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class TaskFields:
    """The task fields of a request as the client sent them (None: not sent)."""

    text: str | None = None
    region: XYXY | None = None
    labels: Sequence[str] | None = None
    categories: Mapping[str, str] | None = None
    multi_label: bool | None = None
    templates: Sequence[str] | None = None
    top_n: int | None = None
    language: str | None = None
    min_score: float | None = None

    @classmethod
    def from_request(cls, payload: AnalyzeRequest) -> TaskFields:
        """The task fields of an analyze body (`/api/v1/analyze`, analyze jobs)."""
        region = payload.region
        return cls(
            text=payload.text,
            region=(region[0], region[1], region[2], region[3]) if region is not None else None,
            labels=payload.labels,
            categories=payload.categories,
            multi_label=payload.multi_label,
            templates=payload.templates,
            top_n=payload.top_n,
            language=payload.language,
            min_score=payload.min_score,
        )

    def task_input(self, spec: TaskSpec) -> TaskInput:
        """The input `spec` takes (checked by `TaskRun.prepare`), or `InvalidInput` for a field it does not read."""
        self._refuse_unread(spec)
        if spec.needs_labels:
            labels = None
            if self.labels is not None:
                # The ZERO_SHOT task's own default ("a photo of {}"), as in the chat, jobs and CLI; only the seed
                # route /api/zero-shot scores the labels as given, as the system it replaces did.
                labels = ZeroShotRequest.create(self.labels, self.categories, bool(self.multi_label), self.templates)
            return TaskInput(self.text, self.region, labels, min_score=self.min_score)
        return TaskInput(
            text_with_classes(spec, self.text, self.labels),
            self.region,
            top_n=self.top_n if self.top_n is not None else DEFAULT_TOP_N,
            language=self.language if self.language is not None else DEFAULT_LANGUAGE,
            min_score=self.min_score,
        )

    def _refuse_unread(self, spec: TaskSpec) -> None:
        unread: list[str] = []
        if not spec.needs_labels:
            unread += [name for name in ("categories", "multi_label", "templates") if getattr(self, name) is not None]
        if spec.output_kind is not OutputKind.CLASSES:
            unread += [name for name in ("top_n", "language") if getattr(self, name) is not None]
        if unread:
            raise InvalidInput(f"{spec.name} takes no {', '.join(unread)}.", code="unexpected_option")
