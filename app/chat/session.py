"""Per-chat-session state: the chosen task, the current images, the last boxes, and a busy guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from app.chat.catalogue import DEFAULT_TASK, get_chat_task
from app.chat.inputs import Upload
from app.core.errors import Busy
from app.core.results import DetectionResult, SegmentationResult
from app.core.tasks import TaskSpec

BoxedResult = DetectionResult | SegmentationResult


@dataclass(frozen=True)
class SessionImage:
    """An accepted upload: where Chainlit stored it and its size. Pixels are decoded per request, so an
    idle session holds no decoded images (16 photos of 12 MP would be ~600 MB)."""

    upload: Upload
    image_wh: tuple[int, int]

    @property
    def name(self) -> str:
        return self.upload.name


@dataclass
class ChatSession:
    """One browser session. Lives in Chainlit's user session; never shared between sessions."""

    identity: str  # rate-limit key: the login name, or the session id when the chat is open
    task: TaskSpec = field(default_factory=lambda: get_chat_task(DEFAULT_TASK))
    images: list[SessionImage] = field(default_factory=list)
    # The numbered boxes of the latest reply that had any (detection or segmentation), per image, for "box 2".
    detections: dict[int, BoxedResult] = field(default_factory=dict)
    # A follow-up button that needs words ("Segment…") waits here for the next message.
    awaiting: TaskSpec | None = None
    upload_batch: int = 0  # increases with every new set of images; stale region pickers are refused
    _busy: bool = False

    @property
    def busy(self) -> bool:
        return self._busy

    def choose_task(self, task: TaskSpec) -> None:
        self.task = task

    def replace_images(self, images: list[SessionImage]) -> None:
        self.images = list(images)
        self.detections = {}
        self.awaiting = None
        self.upload_batch += 1

    def remember_detections(self, results: dict[int, BoxedResult]) -> None:
        """Keep the boxes of the latest reply that had any; other replies leave them as they were."""
        if results:
            self.detections = dict(results)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One request at a time per session: a second one is refused, not run in parallel or queued.

        No await between the check and the set, so two messages on the same event loop cannot both pass.
        """
        if self._busy:
            raise Busy(
                "I'm still working on your previous request. Wait for its answer, then send this again.",
                code="session_busy",
            )
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
