"""One reply per image, chosen by the type of its result, whatever task or model produced it.

Boxes, masks, text regions and texts get the annotated picture (or a thumbnail) with a summary list;
ranked classes and label scores get a table and a chart (`app.chat.replies_classes`); a result of any
other type (a task registered later) gets its own `summary()` and `to_dict()` as the JSON download, so
a new task answers in the chat with no change here. CPU work (drawing, charts): call in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.chat import replies
from app.chat.pictures import annotated_picture, thumbnail
from app.chat.replies_classes import classes_reply
from app.chat.ui import ImageReply
from app.core.classification_results import AnyTaskResult, ClassificationResult, ZeroShotResult
from app.core.errors import InvalidInput
from app.core.images import LoadedImage
from app.core.results import AnyResult, DetectionResult, TextResult
from app.core.task_inputs import TaskInput
from app.core.tasks import TaskSpec, get_task
from app.services.analysis import ImageOutcome


def task_replies(
    spec: TaskSpec, ordered: Sequence[tuple[LoadedImage, ImageOutcome]], title_md: str, task_input: TaskInput
) -> list[ImageReply]:
    """The replies to one task on several images, in order; `title_md` says how the message was understood."""
    built = []
    for loaded, outcome in ordered:
        title = replies.heading_md(loaded.name, title_md)
        if outcome.result is None:
            error = outcome.error or InvalidInput("No result.")
            built.append(ImageReply(loaded.name, f"{title}\n\n{replies.error_markdown(error)}"))
        else:
            built.append(image_reply(spec, loaded, outcome.result, title, task_input))
    return built


def image_reply(
    spec: TaskSpec, loaded: LoadedImage, result: AnyTaskResult, title: str, task_input: TaskInput
) -> ImageReply:
    if isinstance(result, ClassificationResult | ZeroShotResult):
        categories = task_input.labels.categories if task_input.labels is not None else None
        return classes_reply(loaded.name, spec.name, spec.key, title, result, categories)
    if isinstance(result, AnyResult):
        return _pictured_reply(spec, loaded, result, title)
    return _plain_reply(spec, loaded, result, title)


def _pictured_reply(spec: TaskSpec, loaded: LoadedImage, result: AnyResult, title: str) -> ImageReply:
    text_only = isinstance(result, TextResult) and result.region is None  # nothing drawn: a thumbnail
    return ImageReply(
        loaded.name,
        f"{title}\n\n{replies.summary_markdown(spec, result)}",
        thumbnail(loaded.image) if text_only else annotated_picture(loaded.image, result),
        replies.result_downloads(loaded.name, spec, result),
        picture_kind="thumbnail" if text_only else "annotated",
        picture_size="small" if text_only else "large",
    )


def _plain_reply(spec: TaskSpec, loaded: LoadedImage, result: object, title: str) -> ImageReply:
    """A result type the chat has no picture for: its own summary, a thumbnail, and its JSON."""
    summary = str(getattr(result, "summary", lambda: "")()) or "(no summary)"
    body: dict[str, Any] = dict(getattr(result, "to_dict", dict)())
    run = getattr(result, "run", None)
    model = {"model": run.model} if run is not None and hasattr(run, "model") else {}
    download = replies.Download(
        replies.download_name(loaded.name, spec.key), replies.json_bytes({"image": loaded.name, **model, **body})
    )
    return ImageReply(
        loaded.name,
        f"{title}\n\n{replies.escape_md(summary)}",
        thumbnail(loaded.image),
        [download],
        picture_kind="thumbnail",
        picture_size="small",
    )


def everything_replies(
    images: Sequence[LoadedImage], per_task: Mapping[str, Sequence[ImageOutcome]]
) -> list[ImageReply]:
    """The "Analyze everything" replies: caption, objects and text of each image in one reply."""
    built = []
    for index, loaded in enumerate(images):
        results: dict[str, AnyResult] = {}
        problems: list[str] = []
        for token, outcomes in per_task.items():
            outcome = outcomes[index]
            if isinstance(outcome.result, AnyResult):
                results[token] = outcome.result
            elif outcome.error is not None:
                problems.append(f"{get_task(token).name}: {replies.error_markdown(outcome.error)}")
        body = "\n\n".join([replies.everything_markdown(results), *problems])
        title = replies.heading(loaded.name, "Caption, objects and text")
        detections = results.get("<OD>")
        built.append(
            ImageReply(
                loaded.name,
                f"{title}\n\n{body}",
                annotated_picture(loaded.image, detections) if isinstance(detections, DetectionResult) else None,
                replies.everything_downloads(loaded.name, results),
            )
        )
    return built
