"""The task registry: every task the app can run is one `TaskSpec` entry, whatever model serves it.

An entry says what a task is called (token, short name, aliases), what it takes (text, a region, labels),
what it returns and which backend serves it (`backend`). The chat picker, `GET /api/v1/tasks`, the jobs
API, the CLI's `--task`, the seed-compatible names and the backend routing all read the registry, so a
new task is one `register_task(TaskSpec(...))` plus a backend that lists its token in `tasks`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.core.errors import InvalidInput, UnknownTask


class InputKind(StrEnum):
    NONE = "none"
    TEXT = "text"
    REGION = "region"
    LABELS = "labels"  # a list of labels to score (zero-shot classification)


class OutputKind(StrEnum):
    TEXT = "text"
    BOXES = "boxes"
    POLYGONS = "polygons"
    OCR = "ocr"
    MIXED = "mixed"  # boxes and/or polygons (open-vocabulary detection)
    CLASSES = "classes"  # ranked classes of a fixed label set (ImageNet classification)
    LABEL_SCORES = "label_scores"  # a probability per label the caller gave (zero-shot)


FLORENCE_BACKEND = "florence2"


@dataclass(frozen=True)
class TaskSpec:
    token: str  # the prompt token, e.g. "<OD>"
    short_name: str  # e.g. "OD"
    name: str  # human name
    description: str
    input_kind: InputKind
    output_kind: OutputKind
    aliases: tuple[str, ...] = ()
    cascade: bool = False  # not one prompt: captions first, then grounds the caption (app/services/analysis.py)
    backend: str = FLORENCE_BACKEND  # the backend that serves it (app/models/registry.py routes by it)
    icon: str = ""  # the chat picker's lucide icon; empty: one for the output kind
    job_kind: str | None = None  # a name the jobs API also accepts as `kind` for this task ("classify")
    seed_name: str | None = None  # its name on the seed-compatible job routes ("object-detection")

    @property
    def key(self) -> str:
        """The name every edge shows and accepts first (`OD`, `CLASSIFY`)."""
        return self.short_name

    @property
    def needs_text(self) -> bool:
        return self.input_kind is InputKind.TEXT

    @property
    def takes_classes(self) -> bool:
        """Open-vocabulary detection: the text is one or more class names joined with `<and>`."""
        return self.token == "<OPEN_VOCABULARY_DETECTION>"

    @property
    def needs_region(self) -> bool:
        return self.input_kind is InputKind.REGION

    @property
    def needs_labels(self) -> bool:
        return self.input_kind is InputKind.LABELS

    @property
    def is_prompt(self) -> bool:
        """One Florence-2 prompt (the cascade is two; other backends' tasks are none)."""
        return self.backend == FLORENCE_BACKEND and not self.cascade

    def to_dict(self) -> dict[str, str]:
        return {
            "token": self.token,
            "short_name": self.short_name,
            "name": self.name,
            "description": self.description,
            "input": self.input_kind.value,
            "output": self.output_kind.value,
        }


_I, _O = InputKind, OutputKind
PROMPT_TASKS: tuple[TaskSpec, ...] = (  # the 15 prompts Florence-2 was trained on
    TaskSpec("<CAPTION>", "CAPTION", "Caption", "One sentence about the image.", _I.NONE, _O.TEXT, ("caption",),
             seed_name="image-captioning"),
    TaskSpec("<DETAILED_CAPTION>", "DETAILED_CAPTION", "Detailed caption",
             "A few sentences describing the image.", _I.NONE, _O.TEXT, ("detailed",)),
    TaskSpec("<MORE_DETAILED_CAPTION>", "MORE_DETAILED_CAPTION", "More detailed caption",
             "A paragraph describing the image.", _I.NONE, _O.TEXT, ("paragraph",)),
    TaskSpec("<OD>", "OD", "Object detection", "Boxes and category names for the objects.", _I.NONE, _O.BOXES,
             ("detect", "detection", "object_detection"), seed_name="object-detection"),
    TaskSpec("<DENSE_REGION_CAPTION>", "DENSE_REGION_CAPTION", "Dense region caption",
             "Boxes with a short description each.", _I.NONE, _O.BOXES, ("dense",)),
    TaskSpec("<REGION_PROPOSAL>", "REGION_PROPOSAL", "Region proposal",
             "Unlabelled boxes around likely objects.", _I.NONE, _O.BOXES, ("proposal", "proposals")),
    TaskSpec("<CAPTION_TO_PHRASE_GROUNDING>", "CAPTION_TO_PHRASE_GROUNDING", "Phrase grounding",
             "Boxes for the phrases of a caption you type.", _I.TEXT, _O.BOXES, ("grounding", "phrase_grounding")),
    TaskSpec("<REFERRING_EXPRESSION_SEGMENTATION>", "REFERRING_EXPRESSION_SEGMENTATION",
             "Referring expression segmentation", "A mask for the thing you describe.", _I.TEXT, _O.POLYGONS,
             ("segment", "res", "referring_segmentation")),
    TaskSpec("<REGION_TO_SEGMENTATION>", "REGION_TO_SEGMENTATION", "Region to segmentation",
             "A mask for the object inside a box you give.", _I.REGION, _O.POLYGONS, ("region_segmentation",)),
    TaskSpec("<OPEN_VOCABULARY_DETECTION>", "OPEN_VOCABULARY_DETECTION", "Open-vocabulary detection",
             "Find the objects you name (several: cat, dog).", _I.TEXT, _O.MIXED, ("ovd", "open_vocabulary")),
    TaskSpec("<REGION_TO_CATEGORY>", "REGION_TO_CATEGORY", "Region to category",
             "The category of the object inside a box.", _I.REGION, _O.TEXT, ("region_category",)),
    TaskSpec("<REGION_TO_DESCRIPTION>", "REGION_TO_DESCRIPTION", "Region to description",
             "A description of what is inside a box.", _I.REGION, _O.TEXT, ("region_description",)),
    TaskSpec("<REGION_TO_OCR>", "REGION_TO_OCR", "Region to OCR", "The text inside a box.", _I.REGION, _O.TEXT,
             ("region_ocr",)),
    TaskSpec("<OCR>", "OCR", "OCR", "All the text in the image.", _I.NONE, _O.TEXT, ("ocr", "text"),
             seed_name="optical-character-recognition"),
    TaskSpec("<OCR_WITH_REGION>", "OCR_WITH_REGION", "OCR with regions",
             "Text lines with their quadrilaterals.", _I.NONE, _O.OCR, ("ocr_with_region", "ocr_regions")),
)  # fmt: skip
# The Florence-2 demo's cascaded task: a caption (MORE_DETAILED_CAPTION unless the text names
# CAPTION or DETAILED_CAPTION), then CAPTION_TO_PHRASE_GROUNDING on that caption.
CAPTION_GROUNDING = TaskSpec(
    "<CAPTION_GROUNDING>", "CAPTION_GROUNDING", "Caption + grounding",
    "A detailed caption, with a box for each phrase of it.", _I.NONE, _O.BOXES,
    ("caption_grounding", "caption+grounding", "caption_and_grounding"), cascade=True,
)  # fmt: skip
CAPTION_CHOICES = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
DEFAULT_CASCADE_CAPTION = "<MORE_DETAILED_CAPTION>"
FLORENCE_TASKS = (*PROMPT_TASKS, CAPTION_GROUNDING)

CLASSIFY = TaskSpec(
    "<CLASSIFY>", "CLASSIFY", "Classify", "The most likely ImageNet classes, with a chart.", _I.NONE, _O.CLASSES,
    ("classification", "imagenet", "classify_image"), backend="classifier", icon="chart-bar", job_kind="classify",
    seed_name="image-classification",
)  # fmt: skip
ZERO_SHOT = TaskSpec(
    "<ZERO_SHOT>", "ZERO_SHOT", "Zero-shot",
    "Scores for labels you type, comma-separated (category: label groups them), with a chart.",
    _I.LABELS, _O.LABEL_SCORES, ("zeroshot", "zero_shot_classification", "clip"), backend="zero_shot", icon="tags",
    job_kind="zero-shot", seed_name="zero-shot-image-classification",
)  # fmt: skip


def _normalized(name: str) -> str:
    return name.strip().upper().replace("-", "_").replace(" ", "_")


class TaskRegistry:
    """Every task by token, short name and alias, in registration order (which is the order edges list them)."""

    def __init__(self, specs: Sequence[TaskSpec] = ()) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self._by_key: dict[str, TaskSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: TaskSpec) -> TaskSpec:
        keys = {_normalized(key) for key in (spec.token, spec.short_name, *spec.aliases)}
        if clash := sorted(key for key in keys if key in self._by_key):
            raise ValueError(f"Task {spec.short_name} reuses the name(s) {', '.join(clash)} of a registered task.")
        self._specs[spec.token] = spec
        self._by_key.update(dict.fromkeys(keys, spec))
        return spec

    def unregister(self, token: str) -> None:
        spec = self._specs.pop(token)
        self._by_key = {key: value for key, value in self._by_key.items() if value is not spec}

    def all(self) -> tuple[TaskSpec, ...]:
        return tuple(self._specs.values())

    def find(self, name: str) -> TaskSpec | None:
        key = _normalized(name)
        return self._by_key.get(key) or self._by_key.get(f"<{key.strip('<>')}>")

    def get(self, name: str) -> TaskSpec:
        """Resolve a task by token (`<OD>`), short name (`OD`, `od`) or alias (`caption`)."""
        spec = self.find(name)
        if spec is None:
            valid = ", ".join(s.short_name for s in self._specs.values())
            raise UnknownTask(f"Unknown task {name[:80]!r}. Valid tasks: {valid}.")
        return spec


REGISTRY = TaskRegistry((*FLORENCE_TASKS, CLASSIFY, ZERO_SHOT))


def get_task(name: str) -> TaskSpec:
    """Resolve a task by token (`<OD>`), short name (`OD`, `od`) or alias (`caption`)."""
    return REGISTRY.get(name)


def all_tasks() -> tuple[TaskSpec, ...]:
    """Every registered task, in the order the edges list them."""
    return REGISTRY.all()


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task; its backend (`app.models.registry.register_backend`) lists `spec.token` in its `tasks`."""
    return REGISTRY.register(spec)


def unregister_task(token: str) -> None:
    REGISTRY.unregister(token)


# Open-vocabulary detection takes several classes joined with `<and>` ("a cat<and>a dog"), as the
# model was trained and roboflow's integration sends them.
CLASS_SEPARATOR = "<and>"
MAX_CLASSES = 20


def join_classes(labels: Sequence[str]) -> str:
    """Classes for open-vocabulary detection → its text input (`cat<and>dog`); blanks and repeats dropped."""
    cleaned: list[str] = []
    for label in labels:
        name = " ".join(str(label).split())
        if name and name not in cleaned:
            cleaned.append(name)
    if len(cleaned) > MAX_CLASSES:
        raise InvalidInput(f"At most {MAX_CLASSES} classes per request.", code="too_many_classes")
    return CLASS_SEPARATOR.join(cleaned)


def text_with_classes(spec: TaskSpec, text: str | None, labels: Sequence[str] | None) -> str | None:
    """The task's text input when classes may come as a list (`labels: ["cat", "dog"]`) instead of text."""
    if labels is None:
        return text
    if not spec.takes_classes:
        raise InvalidInput(f"{spec.name} takes no labels.", code="unexpected_labels")
    if text is not None and text.strip():
        raise InvalidInput("Give the classes either as labels or as text, not both.", code="labels_and_text")
    return join_classes(labels)


def strip_markup(text: str) -> str:
    """Text without Florence-2 tags (`<loc_5>`, `</s>`), e.g. a generated caption reused as a prompt."""
    return " ".join(_MARKUP_RE.sub(" ", text).split())


def _cascade_caption(spec: TaskSpec, text: str | None, region: object | None) -> str | None:
    """Caption + grounding takes no region; its optional text picks the caption task."""
    if region is not None:
        raise InvalidInput(f"{spec.name} takes no region.", code="unexpected_region")
    if text is None:
        return None
    choice = REGISTRY.find(text)
    if choice is None or choice.token not in CAPTION_CHOICES:
        names = ", ".join(token.strip("<>") for token in CAPTION_CHOICES)
        raise InvalidInput(
            f"{spec.name} takes no text, or the caption task to start from: {names}.", code="invalid_text"
        )
    return choice.token


def classes_from_chat(spec: TaskSpec, text: str) -> str:
    """In the chat, open-vocabulary classes may be typed as a list (`cat, dog`); other text is unchanged."""
    if not spec.takes_classes or CLASS_SEPARATOR in text:
        return text
    return join_classes(re.split(r"[,;\n]", text))


def split_classes(text: str) -> list[str]:
    return [part.strip() for part in text.split(CLASS_SEPARATOR) if part.strip()]


# Florence-2 markup in user text (`<OD>`, `<loc_5>`, `</s>`) would change the prompt: the processor
# rejects a second task token and location tokens would silently move the question.
_MARKUP_RE = re.compile(r"</?[A-Za-z_]+\d*>")


def validate_task_inputs(spec: TaskSpec, text: str | None, region: object | None) -> str | None:
    """Check the extra input before any model work; returns the cleaned text."""
    cleaned = (text or "").strip() or None
    if spec.cascade:
        return _cascade_caption(spec, cleaned, region)
    if spec.needs_text and cleaned is None:
        raise InvalidInput(f"{spec.name} needs text input (e.g. what to find).", code="missing_text")
    if not spec.needs_text and cleaned is not None:
        raise InvalidInput(f"{spec.name} takes no text input.", code="unexpected_text")
    if spec.needs_region and region is None:
        raise InvalidInput(f"{spec.name} needs a region x1,y1,x2,y2 in pixels.", code="missing_region")
    if not spec.needs_region and region is not None:
        raise InvalidInput(f"{spec.name} takes no region.", code="unexpected_region")
    if cleaned is not None and len(cleaned) > 1000:
        raise InvalidInput("Text input is limited to 1000 characters.", code="text_too_long")
    if cleaned is not None and spec.takes_classes:
        cleaned = join_classes(split_classes(cleaned)) or None
        if cleaned is None:
            raise InvalidInput(f"{spec.name} needs text input (e.g. what to find).", code="missing_text")
    checked = cleaned.replace(CLASS_SEPARATOR, " ") if cleaned is not None and spec.takes_classes else cleaned
    if checked is not None and (tag := _MARKUP_RE.search(checked)):
        raise InvalidInput(f"Text input cannot contain model tags such as {tag.group()[:40]}.", code="invalid_text")
    return cleaned
