"""The Classify (ImageNet) and Zero-shot chat tasks: same limits and guards as the Florence-2 tasks.

`app.chat.flow.ChatFlow` hands a message here when the chosen task is a classifier; the session's
busy lock and the error-to-message mapping stay in `ChatFlow`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from app.chat.catalogue import ChatTask, ChatTaskKind
from app.chat.classify_replies import classification_replies
from app.chat.followups import with_follow_ups
from app.chat.inputs import labels_from_text
from app.chat.session import ChatSession
from app.chat.ui import ChatUI
from app.chat.work import decode_images, ensure_backend, finish_step
from app.core.images import LoadedImage
from app.core.task_inputs import ZeroShotRequest
from app.core.tasks import get_task
from app.services.analysis import ImageOutcome as ClassificationOutcome
from app.services.container import Services
from app.services.ratelimit import work_cost

log = logging.getLogger(__name__)

CHAT_TOP_N = 5
_BACKENDS = {ChatTaskKind.CLASSIFY: "classifier", ChatTaskKind.ZERO_SHOT: "zero_shot"}


def ask_labels_markdown(task: ChatTask) -> str:
    return (
        f"**{task.name}** needs labels: type them comma-separated, e.g. `a cat, a dog, a car`, and send "
        "(the image stays). Group labels with `category: label`, e.g. `pet: a cat, pet: a dog, vehicle: a car`."
    )


class ClassificationChat:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(
        self,
        session: ChatSession,
        ui: ChatUI,
        task: ChatTask,
        text: str,
        fresh: Sequence[LoadedImage] | None,
        title: str | None = None,
    ) -> None:
        """Classify every image of the session, or score the labels in `text` against them (zero-shot)."""
        request: ZeroShotRequest | None = None
        if task.kind is ChatTaskKind.ZERO_SHOT:
            if not text:
                await ui.notify(ask_labels_markdown(task))
                return
            labels, label_categories = labels_from_text(text)
            # Checked before the rate limit and the model load: a typo costs nothing. One label gets an
            # independent score (a softmax over one label would always say 100%).
            request = ZeroShotRequest.create(labels, label_categories, multi_label=len(set(labels)) == 1)

        self.services.limiter.hit(session.identity, cost=work_cost(len(session.images), [get_task(task.key)]))
        await ensure_backend(ui, self.services.manager, _BACKENDS[task.kind])
        indices = list(range(len(session.images)))
        pixels = await decode_images(session, indices, fresh, self.services.settings)
        images = [pixels[i] for i in indices]
        classification = self.services.classification
        async with ui.step(task.name) as step:
            started = time.perf_counter()
            outcomes: list[ClassificationOutcome]
            if request is None:
                outcomes = await classification.classify(images, top_n=CHAT_TOP_N)
            else:
                outcomes = await classification.zero_shot(images, request)
            seconds = time.perf_counter() - started
            log.info("chat %s on %d image(s) in %.2fs", task.key, len(images), seconds)
            finish_step(step, task.name, len(images), seconds, failed=all(o.result is None for o in outcomes))
        names = [loaded.name for loaded in images]
        categories = request.categories if request is not None else None
        built = await asyncio.to_thread(classification_replies, task, names, outcomes, categories, title)
        await ui.show_replies(with_follow_ups(built, task.key))
