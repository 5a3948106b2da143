"""What a task takes besides the image, checked before any model work: text, a region, labels, options.

`TaskInput` is the one input type every edge builds (the API routes, jobs, the chat, the CLI) and
`TaskInput.checked(spec)` is the one check: a task gets exactly the input its registry entry says it
takes, so a bad request is refused before the rate limit is charged or a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from app.core import classify_math as cm
from app.core.errors import InvalidInput
from app.core.tasks import OutputKind, TaskSpec, text_with_classes, validate_task_inputs

MAX_TOP_N = 1000
MAX_LABELS = 100
MAX_LABEL_CHARS = 200
MAX_TEMPLATES = 16
MAX_TEMPLATE_CHARS = 200


@dataclass(frozen=True)
class ZeroShotRequest:
    """Validated zero-shot input: labels in order, label → category, prompt templates."""

    labels: tuple[str, ...]
    categories: Mapping[str, str] | None
    multi_label: bool
    templates: tuple[str, ...]

    @classmethod
    def create(
        cls,
        labels: Sequence[str],
        categories: Mapping[str, str] | None = None,
        multi_label: bool = False,
        templates: Sequence[str] | None = None,
    ) -> ZeroShotRequest:
        cleaned = tuple(dict.fromkeys(label.strip() for label in labels if label and label.strip()))
        if not cleaned:
            raise InvalidInput("Give at least one label.", code="missing_labels")
        if len(cleaned) > MAX_LABELS:
            raise InvalidInput(f"At most {MAX_LABELS} labels per request.", code="too_many_labels")
        if any(len(label) > MAX_LABEL_CHARS for label in cleaned):
            raise InvalidInput(f"Labels are limited to {MAX_LABEL_CHARS} characters.", code="label_too_long")
        return cls(
            labels=cleaned,
            categories=_check_categories(categories, cleaned) if categories else None,
            multi_label=multi_label,
            templates=_check_templates(templates),
        )


def _check_categories(categories: Mapping[str, str], labels: Sequence[str]) -> dict[str, str]:
    cleaned = {str(label).strip(): str(category).strip() for label, category in categories.items()}
    unknown = [label for label in cleaned if label not in labels]
    if unknown:
        raise InvalidInput(
            f"categories name labels that are not in `labels`: {', '.join(repr(u[:40]) for u in unknown[:5])}.",
            code="unknown_category_label",
        )
    if any(not category or len(category) > MAX_LABEL_CHARS for category in cleaned.values()):
        raise InvalidInput(f"Category names must have 1 to {MAX_LABEL_CHARS} characters.", code="invalid_category")
    return cleaned


def _check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    if not templates:
        return cm.DEFAULT_TEMPLATES
    cleaned = tuple(dict.fromkeys(t.strip() for t in templates if t and t.strip()))
    if not cleaned or len(cleaned) > MAX_TEMPLATES:
        raise InvalidInput(f"Give 1 to {MAX_TEMPLATES} templates.", code="invalid_templates")
    for template in cleaned:
        # Exactly one `{}` and no other braces: str.format must place the label and nothing else.
        if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.replace("{}", "").count("}"):
            raise InvalidInput(
                f"Template {template[:60]!r} must contain `{{}}` exactly once (where the label goes) "
                "and no other braces.",
                code="invalid_template",
            )
        if len(template) > MAX_TEMPLATE_CHARS:
            raise InvalidInput(f"Templates are limited to {MAX_TEMPLATE_CHARS} characters.", code="invalid_template")
    return cleaned


@dataclass(frozen=True)
class TaskInput:
    """Everything a task may take besides the image; each task reads the fields its entry names."""

    text: str | None = None
    region: Sequence[float] | None = None  # x1,y1,x2,y2 pixels; clipped per image by TaskRequest.create
    labels: ZeroShotRequest | None = None  # tasks that score labels (zero-shot)
    top_n: int = 3  # tasks that rank a fixed set of classes (ImageNet)
    language: str = "en"  # their display names' language
    min_score: float | None = None  # drop boxes, masks and text regions scored below it

    def checked(self, spec: TaskSpec) -> TaskInput:
        """This input cleaned for `spec`, or `InvalidInput` naming what is missing or unexpected."""
        text = validate_task_inputs(spec, self.text, self.region)
        if spec.needs_labels and self.labels is None:
            raise InvalidInput(f"{spec.name} needs labels to score.", code="missing_labels")
        if not spec.needs_labels and self.labels is not None:
            raise InvalidInput(f"{spec.name} takes no labels.", code="unexpected_labels")
        if spec.output_kind is OutputKind.CLASSES and not 1 <= self.top_n <= MAX_TOP_N:
            raise InvalidInput(f"The number of predictions must be 1 to {MAX_TOP_N}.", code="invalid_top_n")
        return replace(self, text=text)


@dataclass(frozen=True)
class TaskFields:
    """A request's task fields as the client sent them (None: not sent), from any edge (API body or form,
    job parameters, command line); `task_input(spec)` says what they mean for `spec`.

    `labels` are the labels to score for a task that takes labels (zero-shot), the classes to find for
    open-vocabulary detection, and refused by any other task; `categories`, `multi_label` and `templates`
    only go with labels to score, `top_n` and `language` only with a task that ranks a fixed set of
    classes (ImageNet). A field the task does not read is refused rather than ignored.
    """

    text: str | None = None
    region: Sequence[float] | None = None
    labels: Sequence[str] | None = None
    categories: Mapping[str, str] | None = None
    multi_label: bool | None = None
    templates: Sequence[str] | None = None
    top_n: int | None = None
    language: str | None = None
    min_score: float | None = None

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
            top_n=self.top_n if self.top_n is not None else TaskInput.top_n,
            language=self.language if self.language is not None else TaskInput.language,
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
