"""What the chat shows, independent of Chainlit: per-image replies, region pickers and the `ChatUI` protocol.

`chainlit_app.py` implements `ChatUI` on Chainlit messages; the tests implement it by recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from app.chat.pictures import Picture
from app.chat.replies import Download


@dataclass(frozen=True)
class FollowUp:
    """A button under the newest reply that runs `task_key` on the same images without typing."""

    task_key: str
    label: str
    tooltip: str


@dataclass(frozen=True)
class ImageReply:
    """Everything shown for one image: heading + summary, one picture, the downloads."""

    image_name: str
    markdown: str
    picture: Picture | None = None
    downloads: list[Download] = field(default_factory=list)
    picture_kind: str = "annotated"  # what the picture is: the annotated image, or a probability "chart"
    follow_ups: tuple[FollowUp, ...] = ()  # set on the last reply of a message only
    picture_size: Literal["small", "medium", "large"] = (
        "large"  # Chainlit's image size: "small" for a thumbnail next to a text answer
    )

    @property
    def picture_name(self) -> str:
        stem = self.image_name.rsplit(".", 1)[0] or "image"
        return f"{stem}.{self.picture_kind}.{self.picture.extension if self.picture else 'png'}"


@dataclass(frozen=True)
class RegionPicker:
    """Props of the region picker element for one image."""

    image_index: int
    image_name: str
    image_wh: tuple[int, int]
    src: str
    task: str
    task_name: str
    batch: int
    # The numbered boxes of the latest answer on this image: (number, label, xyxy), to start from.
    boxes: tuple[tuple[int, str, tuple[float, float, float, float]], ...] = ()

    def props(self) -> dict[str, object]:
        return {
            "src": self.src,
            "width": self.image_wh[0],
            "height": self.image_wh[1],
            "imageIndex": self.image_index,
            "imageName": self.image_name,
            "task": self.task,
            "taskName": self.task_name,
            "batch": self.batch,
            "boxes": [{"number": n, "label": label, "xyxy": list(xyxy)} for n, label, xyxy in self.boxes],
        }


class StepHandle(Protocol):
    def finish(self, title: str, detail: str) -> None:
        """Final title and text, shown when the step closes."""

    def fail(self, title: str, detail: str) -> None:
        """Close as failed: the run produced no result (the replies say why)."""


class Progress(Protocol):
    async def show(self, markdown: str) -> None:
        """Replace the progress message's text."""


class ChatUI(Protocol):
    async def notify(self, markdown: str) -> None: ...

    def progress(self, markdown: str, failed: str) -> AbstractAsyncContextManager[Progress]:
        """A message whose text is updated while something long runs; it reads `failed` if that raises."""

    async def show_replies(self, replies: Sequence[ImageReply]) -> None: ...

    async def ask_region(self, markdown: str, pickers: Sequence[RegionPicker]) -> None: ...

    def step(self, name: str) -> AbstractAsyncContextManager[StepHandle]: ...
