"""The chat's tasks: Auto plus every task of the registry (`app.core.tasks`), read at call time.

The composer's Task picker, the session's chosen task and the dispatch in `app.chat.flow` all read
`chat_tasks()`, so a task registered at any time (`register_task`) appears in the chat with no other change.
Auto is the one chat-only task: it reads the message and picks a registered one (`app.chat.intent`).
"""

from __future__ import annotations

from app.core.errors import UnknownTask
from app.core.tasks import REGISTRY, InputKind, OutputKind, TaskRegistry, TaskSpec, all_tasks

AUTO = TaskSpec(
    "<AUTO>",
    "AUTO",
    "Auto",
    'Picks the task from your message: "find the cars", "read the text", "what is in box 2", '
    '"is it a cat or a dog?". An empty message gives a caption.',
    InputKind.NONE,  # what it takes is the chosen task's business
    OutputKind.MIXED,
    aliases=("automatic",),
    backend="",  # never run: it stands for the task the message asks for
    icon="wand-sparkles",
)
DEFAULT_TASK = "AUTO"
_CHAT_ONLY = TaskRegistry((AUTO,))

_ICONS = {
    OutputKind.TEXT: "text",
    OutputKind.BOXES: "scan",
    OutputKind.POLYGONS: "shapes",
    OutputKind.OCR: "scan-text",
    OutputKind.CLASSES: "chart-bar",
    OutputKind.LABEL_SCORES: "tags",
}


def chat_tasks() -> tuple[TaskSpec, ...]:
    """The picker's options in order: Auto, then every registered task in registration order."""
    return (AUTO, *all_tasks())


def is_auto(spec: TaskSpec) -> bool:
    return spec is AUTO


def get_chat_task(name: str) -> TaskSpec:
    """A task by picker id, token, short name or alias (`AUTO`, `<OD>`, `od`, `caption`, `imagenet`, `clip`)."""
    spec = _CHAT_ONLY.find(name) or REGISTRY.find(name)
    if spec is None:
        valid = ", ".join(task.key for task in chat_tasks())
        raise UnknownTask(f"Unknown task {name[:80]!r}. Valid tasks: {valid}.")
    return spec


def picker_icon(spec: TaskSpec) -> str:
    """The lucide icon Chainlit's picker shows: the entry's own, else one for what the task takes or returns."""
    if spec.icon:
        return spec.icon
    if spec.input_kind is InputKind.REGION:
        return "square-dashed-mouse-pointer"
    return _ICONS.get(spec.output_kind, "scan")


def picker_hint(spec: TaskSpec) -> str:
    """What else the task takes from the user, appended to the description in the picker."""
    if spec.needs_region:
        return " Needs a box."
    return " Uses your message." if spec.needs_text or spec.needs_labels else ""


def takes_message(spec: TaskSpec) -> bool:
    """Whether the message's words are the task's input (text, labels, or a typed region) rather than ignored."""
    return spec.input_kind is not InputKind.NONE
