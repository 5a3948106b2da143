"""The words of the chat: welcome, per-image summaries, downloads and error messages (no Chainlit here)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from app.core.classification_results import AnyTaskResult
from app.core.config import Settings
from app.core.errors import (
    AppError,
    Busy,
    InferenceError,
    InvalidImage,
    InvalidInput,
    ModelUnavailable,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
)
from app.core.geometry import XYXY
from app.core.results import AnyResult, DetectionResult, OCRResult, SegmentationResult, TextResult
from app.core.tasks import FLORENCE_BACKEND, TaskSpec

log = logging.getLogger(__name__)

MAX_LISTED_ITEMS = 20  # longer lists stay in the JSON download
_CODE_TASKS = ("<OCR>", "<REGION_TO_OCR>")
_MD_SPECIAL_RE = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


@dataclass(frozen=True)
class Download:
    name: str
    content: bytes
    mime: str = "application/json"


def escape_md(text: str) -> str:
    """Model output and file names are shown as plain text, never interpreted as markdown or HTML."""
    return _MD_SPECIAL_RE.sub(r"\\\1", " ".join(text.split()))


def code_block(text: str) -> str:
    """A fenced block that no backtick run inside `text` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def fmt_box(xyxy: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in xyxy) + ")"


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


# -- summaries ---------------------------------------------------------------------------------------------
def summary_markdown(spec: TaskSpec, result: AnyResult) -> str:
    """A short readable summary: the caption, labels with counts, the OCR text as a block."""
    lines: list[str] = []
    if result.region is not None:
        lines.append(f"Region {fmt_box(result.region)}")
    if isinstance(result, TextResult):
        if not result.text:
            lines.append("*(no text)*")
        elif spec.token in _CODE_TASKS:
            lines.append(code_block(result.text))
        else:
            lines.append(escape_md(result.text))
    elif isinstance(result, DetectionResult):
        lines.extend(escape_md(part) for part in result.summary().split("\n"))  # a grounded caption, then counts
        lines.extend(_numbered(result.labels, result.xyxy, result.scores))
    elif isinstance(result, SegmentationResult):
        lines.append(escape_md(result.summary()))
        boxes = [result.instance_xyxy(i) for i in range(len(result))]
        lines.extend(_numbered(result.labels, boxes, result.scores))
    elif isinstance(result, OCRResult):
        count = len(result.texts)
        lines.append(f"{count} text line{'s' if count != 1 else ''}" if count else "No text found.")
        if result.full_text:
            lines.append(code_block(result.full_text))
    return "\n\n".join(lines)


def _numbered(labels: Sequence[str], boxes: Sequence[XYXY | None], scores: Sequence[float] | None = None) -> list[str]:
    """`#1 cat 0.91 (12, 30, 200, 180)`: the numbers drawn on the picture, and what "box 2" refers to."""
    rows = [
        f"- \\#{i} {escape_md(label) if label else 'region'}{_score(scores, i - 1)} "
        f"{fmt_box(box) if box is not None else ''}".rstrip()
        for i, (label, box) in enumerate(zip(labels, boxes, strict=False), start=1)
    ]
    if len(rows) > MAX_LISTED_ITEMS:
        rows = [*rows[:MAX_LISTED_ITEMS], f"… and {len(rows) - MAX_LISTED_ITEMS} more in the JSON download"]
    return ["\n".join(rows)] if rows else []


def _score(scores: Sequence[float] | None, index: int) -> str:
    return f" {scores[index]:.2f}" if scores is not None else ""


def everything_markdown(results: Mapping[str, AnyResult]) -> str:
    """Caption, objects and text of one image in one reply (the "Analyze everything" action)."""
    caption = results.get("<CAPTION>")
    detections = results.get("<OD>")
    text = results.get("<OCR>")
    parts: list[str] = []
    if isinstance(caption, TextResult):
        parts.append("**Caption:** " + (escape_md(caption.text) or "*(none)*"))
    if isinstance(detections, DetectionResult):
        parts.append("**Objects:** " + escape_md(detections.summary()))
        parts.extend(_numbered(detections.labels, detections.xyxy, detections.scores))
    if isinstance(text, TextResult):
        parts.append("**Text:**" + ("\n\n" + code_block(text.text) if text.text else " *(none found)*"))
    return "\n\n".join(parts)


def heading(image_name: str, title: str) -> str:
    return heading_md(image_name, escape_md(title))


def heading_md(image_name: str, title_md: str) -> str:
    """`**street.jpg** — Open-vocabulary detection of *cars*`: `title_md` is markdown already."""
    return f"**{escape_md(image_name)}** — {title_md}"


# -- downloads ---------------------------------------------------------------------------------------------
def safe_stem(image_name: str) -> str:
    stem = PurePath(image_name).stem or "image"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "image"


# What a download holds, in words: `street · objects.json`. A task missing here reads as its short name.
DOWNLOAD_WORDS = {
    "CAPTION": "caption",
    "DETAILED_CAPTION": "detailed caption",
    "MORE_DETAILED_CAPTION": "more detailed caption",
    "OD": "objects",
    "DENSE_REGION_CAPTION": "region captions",
    "REGION_PROPOSAL": "region proposals",
    "CAPTION_TO_PHRASE_GROUNDING": "grounding",
    "CAPTION_GROUNDING": "grounded caption",
    "REFERRING_EXPRESSION_SEGMENTATION": "segmentation",
    "REGION_TO_SEGMENTATION": "region segmentation",
    "OPEN_VOCABULARY_DETECTION": "found",
    "REGION_TO_CATEGORY": "region category",
    "REGION_TO_DESCRIPTION": "region description",
    "REGION_TO_OCR": "region text",
    "OCR": "text",
    "OCR_WITH_REGION": "text regions",
    "CLASSIFY": "classes",
    "ZERO_SHOT": "zero-shot",
    "EVERYTHING": "everything",
}


def download_name(image_name: str, task_key: str, extension: str = "json") -> str:
    """`street · objects.json`, `street · objects.coco.json`: the image, what was done, the format."""
    words = DOWNLOAD_WORDS.get(task_key) or task_key.lower().replace("_", " ")
    return f"{safe_stem(image_name)} · {words}.{extension}"


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8")


def model_of(result: AnyTaskResult) -> dict[str, str]:
    """`{"model": id}` of the model that answered (its run info, stamped by the model manager), or nothing."""
    return {"model": result.run.model} if result.run is not None else {}


def result_downloads(image_name: str, spec: TaskSpec, result: AnyResult) -> list[Download]:
    """The full result as JSON, then COCO JSON when the result has boxes or polygons (always in that order)."""
    body = {"image": image_name, **model_of(result), **result.to_dict()}
    downloads = [Download(download_name(image_name, spec.short_name), json_bytes(body))]
    if isinstance(result, DetectionResult | SegmentationResult) and len(result):
        coco = result.to_coco(file_name=image_name)
        downloads.append(Download(download_name(image_name, spec.short_name, "coco.json"), json_bytes(coco)))
    return downloads


def combined_coco_download(task_key: str, named_results: Sequence[tuple[str, AnyTaskResult | None]]) -> Download | None:
    """One COCO dataset for a multi-image message: every image with its own id, categories shared by name.

    None for a single image (its own COCO download is the same) or when no image has boxes or polygons."""
    from app.cli.folder import merge_coco  # the folder jobs' merge: the same ids and categories rules

    boxed = [(name, r) for name, r in named_results if isinstance(r, DetectionResult | SegmentationResult)]
    if len(named_results) < 2 or not any(len(r) for _, r in boxed):
        return None
    dataset = merge_coco([r.to_coco(file_name=name) for name, r in boxed])
    words = DOWNLOAD_WORDS.get(task_key) or task_key.lower().replace("_", " ")
    return Download(f"{len(boxed)} images · {words}.coco.json", json_bytes(dataset))


def everything_downloads(image_name: str, results: Mapping[str, AnyResult]) -> list[Download]:
    """All results in one JSON. `model` is the first result's; `models` names each task's when they differ
    (OCR_BACKEND=rapidocr reads the text while Florence-2 captions)."""
    models = {task: r.run.model for task, r in results.items() if r.run is not None}
    body: dict[str, Any] = {"image": image_name}
    if models:
        body["model"] = next(iter(models.values()))
    if len(set(models.values())) > 1:
        body["models"] = models
    body["results"] = {task: r.to_dict() for task, r in results.items()}
    downloads = [Download(download_name(image_name, "EVERYTHING"), json_bytes(body))]
    detections = results.get("<OD>")
    if isinstance(detections, DetectionResult) and len(detections):
        coco = detections.to_coco(file_name=image_name)
        downloads.append(Download(download_name(image_name, "OD", "coco.json"), json_bytes(coco)))
    return downloads


# -- words -------------------------------------------------------------------------------------------------
_FLORENCE_NAME_RE = re.compile(r"florence[-_ ]?2(?:[-_ ](base|large))?(?:[-_ ](ft))?", re.IGNORECASE)


def model_in_words(model_id: str) -> str:
    """`florence-community/Florence-2-large-ft` → "Florence-2 large (fine-tuned)"; another id or a folder
    → its last part (`/models/tiny` → "tiny"), never the whole path."""
    name = PurePath(model_id.rstrip("/\\")).name or model_id
    match = _FLORENCE_NAME_RE.search(name)
    if match is None:
        return name
    size, tuned = match.groups()
    return "Florence-2" + (f" {size.lower()}" if size else "") + (" (fine-tuned)" if tuned else "")


def welcome_markdown(status: Sequence[Mapping[str, Any]], settings: Settings, primary: str = FLORENCE_BACKEND) -> str:
    # The primary backend's entry (the model manager's `primary`): with OCR_BACKEND=rapidocr that is not first.
    model = next((entry for entry in status if entry.get("name") == primary), status[0] if status else {})
    state = str(model.get("state", "not_loaded"))
    words = escape_md(model_in_words(str(model.get("model_id", settings.model_id))))
    if state == "ready":
        where = f"**{words}** is loaded and ready on {model.get('device')} ({model.get('dtype')})."
    elif state == "loading":
        where = f"**{words}** is loading now."
    elif state == "failed":
        # Our own words (commands in backticks, links): markdown as written, only HTML-like text escaped.
        reason = re.sub(r"([<>])", r"\\\1", str(model.get("error", "unknown error")))
        return f"**{words} failed to load.**\n\n{reason}"
    else:
        where = f"**{words}** loads with the first request (it takes a while once)."
    return (
        f"{where}\n\n"
        "Drop in one or more images and say what you want: *find the cars*, *read the text*, *segment the dog*, "
        "*what is in box 2*, *is it a cat or a dog?* An image with no message gets a caption. The buttons under "
        "each answer run the next task; the **Task** picker below chooses one yourself."
    )


def ask_text_markdown(spec: TaskSpec) -> str:
    return f"**{spec.name}** needs words: {spec.description} Type them and send (the image stays)."


def ask_labels_markdown(spec: TaskSpec) -> str:
    return (
        f"**{spec.name}** needs labels: type them comma-separated, e.g. `a cat, a dog, a car`, and send "
        "(the image stays). Group labels with `category: label`, e.g. `pet: a cat, pet: a dog, vehicle: a car`."
    )


def ask_region_markdown(spec: TaskSpec, has_detections: bool) -> str:
    ways = "drag a box on the image below and press **Run**, or type `x1,y1,x2,y2` in pixels"
    if has_detections:
        ways += ", or start from a numbered box of the latest answer, or type one such as `box 2`"
    return f"**{spec.name}** needs a region: {ways}."


def ask_follow_up_text_markdown(task_name: str) -> str:
    return f"**{escape_md(task_name)}**: type what to look for, e.g. `the dog`, and send (the image stays)."


def not_understood_markdown(text: str, task_name: str) -> str:
    shown = escape_md(text[:80] + ("…" if len(text) > 80 else ""))
    return (
        f"I did not recognise a request in “{shown}”, so here is a **{escape_md(task_name)}**. Try "
        "“find the cars”, “read the text”, “segment the dog”, “what is in box 2” or “is it a cat or a dog?”, "
        "or choose a task in the **Task** picker."
    )


def no_images_markdown() -> str:
    return "Add an image first: drag it into the chat or use the paperclip, then send."


def error_markdown(exc: BaseException) -> str:
    """The one place errors become chat text. `AppError` messages are written for users; anything
    else is logged with a reference and shown without details (never a stack trace).

    Plain bold lead words rather than emoji: headless and minimal systems often lack an emoji font.
    """
    if isinstance(exc, ModelUnavailable):
        return f"**The model is not available.**\n\n{exc.message}"
    if isinstance(exc, AppError):
        return f"**{_lead(exc)}** {exc.message}"
    reference = uuid.uuid4().hex[:8]
    log.error("chat request failed (ref %s)", reference, exc_info=exc)
    return f"Something went wrong on our side (reference `{reference}`). It has been logged; please try again."


def _lead(exc: AppError) -> str:
    if isinstance(exc, RateLimited):
        return "Too many requests."
    if exc.code in ("over_rate_limit", "request_too_many_pixels"):  # a 413 about the whole message, not one file
        return "Too much at once."
    if isinstance(exc, Busy):
        return "Busy."
    if isinstance(exc, InvalidImage | UnsupportedMediaType | PayloadTooLarge):
        return "File refused."
    if isinstance(exc, InvalidInput):
        return "Cannot run that."
    if isinstance(exc, InferenceError):
        return "The model failed."
    return "Error."
