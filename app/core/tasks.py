"""The catalogue of Florence-2 task prompts: what each needs and what it returns."""

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


class OutputKind(StrEnum):
    TEXT = "text"
    BOXES = "boxes"
    POLYGONS = "polygons"
    OCR = "ocr"
    MIXED = "mixed"  # boxes and/or polygons (open-vocabulary detection)


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
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("<CAPTION>", "CAPTION", "Caption", "One sentence about the image.", _I.NONE, _O.TEXT, ("caption",)),
    TaskSpec("<DETAILED_CAPTION>", "DETAILED_CAPTION", "Detailed caption",
             "A few sentences describing the image.", _I.NONE, _O.TEXT, ("detailed",)),
    TaskSpec("<MORE_DETAILED_CAPTION>", "MORE_DETAILED_CAPTION", "More detailed caption",
             "A paragraph describing the image.", _I.NONE, _O.TEXT, ("paragraph",)),
    TaskSpec("<OD>", "OD", "Object detection", "Boxes and category names for the objects.", _I.NONE, _O.BOXES,
             ("detect", "detection", "object_detection")),
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
    TaskSpec("<OCR>", "OCR", "OCR", "All the text in the image.", _I.NONE, _O.TEXT, ("ocr", "text")),
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
PROMPT_TASKS = TASKS  # the 15 prompts Florence-2 was trained on
TASKS = (*PROMPT_TASKS, CAPTION_GROUNDING)

_BY_KEY: dict[str, TaskSpec] = {}
for _spec in TASKS:
    for _key in (_spec.token, _spec.short_name, *_spec.aliases):
        _BY_KEY[_key.upper().replace("-", "_").replace(" ", "_")] = _spec


def get_task(name: str) -> TaskSpec:
    """Resolve a task by token (`<OD>`), short name (`OD`, `od`) or alias (`caption`)."""
    key = name.strip().upper().replace("-", "_").replace(" ", "_")
    spec = _BY_KEY.get(key) or _BY_KEY.get(f"<{key.strip('<>')}>")
    if spec is None:
        valid = ", ".join(s.short_name for s in TASKS)
        raise UnknownTask(f"Unknown task {name[:80]!r}. Valid tasks: {valid}.")
    return spec


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
    choice = _BY_KEY.get(text.upper().replace("-", "_").replace(" ", "_")) or _BY_KEY.get(
        f"<{text.upper().strip('<>')}>"
    )
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
