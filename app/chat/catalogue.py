"""The chat's task list in one place: the Florence-2 catalogue (`app.core.tasks.TASKS`) plus the classifiers.

The composer's Task picker, the session's chosen task and the dispatch in `app.chat.flow` all read
`CHAT_TASKS`, so a task added to the catalogue appears in the chat with no other change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.core.errors import UnknownTask
from app.core.tasks import FLORENCE_TASKS as TASKS
from app.core.tasks import InputKind, OutputKind, TaskSpec, get_task


class ChatTaskKind(StrEnum):
    AUTO = "auto"  # reads the message and picks one of the others (`app.chat.intent`)
    FLORENCE = "florence"  # one of the Florence-2 prompts; `spec` says which
    CLASSIFY = "classify"  # ImageNet classifier
    ZERO_SHOT = "zero_shot"  # CLIP/SigLIP against labels the user types


@dataclass(frozen=True)
class ChatTask:
    key: str  # the picker's option id: a Florence short name (`OD`), `CLASSIFY` or `ZERO_SHOT`
    name: str
    description: str
    icon: str  # a lucide icon name, as Chainlit's picker expects
    kind: ChatTaskKind
    spec: TaskSpec | None = None  # set exactly for Florence tasks
    aliases: tuple[str, ...] = ()

    @property
    def needs_text(self) -> bool:
        return self.kind is ChatTaskKind.ZERO_SHOT or (self.spec is not None and self.spec.needs_text)

    @property
    def hint(self) -> str:
        """What else the task takes from the user, appended to the description in the picker."""
        if self.spec is not None and self.spec.needs_region:
            return " Needs a box."
        return " Uses your message." if self.needs_text else ""


_ICONS = {OutputKind.TEXT: "text", OutputKind.BOXES: "scan", OutputKind.POLYGONS: "shapes", OutputKind.OCR: "scan-text"}


def _florence(spec: TaskSpec) -> ChatTask:
    icon = _ICONS.get(spec.output_kind, "scan")
    if spec.input_kind is InputKind.REGION:
        icon = "square-dashed-mouse-pointer"
    return ChatTask(spec.short_name, spec.name, spec.description, icon, ChatTaskKind.FLORENCE, spec=spec)


CLASSIFY = ChatTask(
    "CLASSIFY",
    "Classify",
    "The most likely ImageNet classes, with a chart.",
    "chart-bar",
    ChatTaskKind.CLASSIFY,
    aliases=("CLASSIFICATION", "IMAGENET"),
)
ZERO_SHOT = ChatTask(
    "ZERO_SHOT",
    "Zero-shot",
    "Scores for labels you type, comma-separated (category: label groups them), with a chart.",
    "tags",
    ChatTaskKind.ZERO_SHOT,
    aliases=("ZEROSHOT", "ZERO_SHOT_CLASSIFICATION", "CLIP"),
)
AUTO = ChatTask(
    "AUTO",
    "Auto",
    'Picks the task from your message: "find the cars", "read the text", "what is in box 2", '
    '"is it a cat or a dog?". An empty message gives a caption.',
    "wand-sparkles",
    ChatTaskKind.AUTO,
    aliases=("AUTOMATIC",),
)
CHAT_TASKS: tuple[ChatTask, ...] = (AUTO, *(_florence(spec) for spec in TASKS), CLASSIFY, ZERO_SHOT)
DEFAULT_TASK = "AUTO"

_FLORENCE_BY_SPEC = {task.spec: task for task in CHAT_TASKS if task.spec is not None}
_OTHERS = {key: task for task in (AUTO, CLASSIFY, ZERO_SHOT) for key in (task.key, *task.aliases)}


def get_chat_task(name: str) -> ChatTask:
    """A task by picker id, Florence token/short name/alias (`<OD>`, `od`, `caption`) or classifier name."""
    key = name.strip().upper().replace("-", "_").replace(" ", "_")
    if key in _OTHERS:
        return _OTHERS[key]
    try:
        return _FLORENCE_BY_SPEC[get_task(name)]
    except UnknownTask:
        valid = ", ".join(task.key for task in CHAT_TASKS)
        raise UnknownTask(f"Unknown task {name[:80]!r}. Valid tasks: {valid}.") from None
