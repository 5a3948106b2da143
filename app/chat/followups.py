"""The buttons under the newest reply: the likely next tasks on the same images, run without typing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from app.chat.ui import FollowUp, ImageReply
from app.core.tasks import REGISTRY

FOLLOW_UPS: tuple[FollowUp, ...] = (
    FollowUp("OD", "Objects", "Object detection: numbered boxes for the objects"),
    FollowUp("OCR_WITH_REGION", "Text", "Read the text and show where it is"),
    FollowUp("REGION_TO_DESCRIPTION", "Ask about a box", "Describe a box you drag or a numbered box"),
    FollowUp("DETAILED_CAPTION", "Detailed caption", "A few sentences about the image"),
    FollowUp("REFERRING_EXPRESSION_SEGMENTATION", "Segment…", "A mask for what you name next"),
    FollowUp("CAPTION", "Caption", "One sentence about the image"),
)
MAX_FOLLOW_UPS = 5


def follow_ups_after(task_key: str) -> tuple[FollowUp, ...]:
    """The follow-ups for a reply to `task_key`: every common next task except the one just run (asking
    about another box stays: it is the usual next step after asking about one). A button whose task is no
    longer registered is left out."""
    again = {"REGION_TO_DESCRIPTION"}
    offered = (f for f in FOLLOW_UPS if REGISTRY.find(f.task_key) is not None)
    return tuple(f for f in offered if f.task_key != task_key or f.task_key in again)[:MAX_FOLLOW_UPS]


def with_follow_ups(replies: Sequence[ImageReply], task_key: str) -> list[ImageReply]:
    """The replies with the buttons on the last one, so they sit under the whole answer."""
    if not replies:
        return []
    *first, last = replies
    return [*first, replace(last, follow_ups=follow_ups_after(task_key))]
