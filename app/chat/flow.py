"""What the chat does with a message, a picked region or "Analyze everything", independent of Chainlit.

The Chainlit module turns events into calls here and implements `ChatUI` to show what comes back, so
the whole conversation logic runs in tests with a recording UI and the real (tiny) model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from app.chat import replies
from app.chat.answers import everything_replies, task_replies
from app.chat.budget import within_pixel_budget
from app.chat.catalogue import get_chat_task, is_auto, takes_message
from app.chat.followups import with_follow_ups
from app.chat.inputs import (
    Upload,
    labels_from_text,
    load_uploads,
    numbered_boxes,
    region_from_payload,
    regions_from_text,
)
from app.chat.intent import Intent, understand
from app.chat.pictures import picker_data_url
from app.chat.samples import starter_upload
from app.chat.session import BoxedResult, ChatSession, SessionImage
from app.chat.ui import ChatUI, RegionPicker
from app.chat.work import decode_images, ensure_backend, finish_step
from app.core.errors import AppError, InvalidInput
from app.core.geometry import XYXY
from app.core.images import LoadedImage
from app.core.results import DetectionResult, SegmentationResult
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.core.tasks import InputKind, TaskSpec, classes_from_chat, get_task
from app.services.analysis import ImageOutcome
from app.services.container import Services
from app.services.ratelimit import work_cost

log = logging.getLogger(__name__)

EVERYTHING_TASKS = ("<CAPTION>", "<OD>", "<OCR>")
MAX_PICKERS = 4  # typed coordinates still reach every image of a larger upload
MAX_PICKER_BOXES = 12  # numbered boxes offered as starting points in a picker; `box N` reaches the rest
CHAT_TOP_N = 5  # classes shown for a task that ranks a fixed set (ImageNet)


class ChatFlow:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    # -- entry points: one request per session, every failure becomes a chat message ------------------
    async def on_message(
        self, session: ChatSession, ui: ChatUI, text: str, uploads: Sequence[Upload], task_key: str | None
    ) -> None:
        if not uploads and (sample := starter_upload(text)) is not None:  # a starter: its sample image
            uploads = [sample]
        message = functools.partial(self._message, session, ui, text, uploads, task_key)
        await self._guarded(session, ui, message, uploads)

    async def on_region_picked(self, session: ChatSession, ui: ChatUI, payload: Mapping[str, object]) -> None:
        await self._guarded(session, ui, functools.partial(self._region_picked, session, ui, payload))

    async def on_follow_up(self, session: ChatSession, ui: ChatUI, task_key: str) -> None:
        await self._guarded(session, ui, functools.partial(self._follow_up, session, ui, task_key))

    async def on_analyze_everything(self, session: ChatSession, ui: ChatUI) -> None:
        await self._guarded(session, ui, functools.partial(self._everything, session, ui))

    async def _guarded(
        self, session: ChatSession, ui: ChatUI, work: Callable[[], Awaitable[None]], uploads: Sequence[Upload] = ()
    ) -> None:
        try:
            async with session.exclusive(), within_pixel_budget(self.services.pixels, session, uploads, self.settings):
                await work()
        except Exception as exc:  # noqa: BLE001 - the one place chat errors are turned into words
            await ui.notify(replies.error_markdown(exc))

    # -- requests ------------------------------------------------------------------------------------------
    async def _message(
        self, session: ChatSession, ui: ChatUI, text: str, uploads: Sequence[Upload], task_key: str | None
    ) -> None:
        if task_key:
            session.choose_task(get_chat_task(task_key))
        fresh: list[LoadedImage] | None = None
        if uploads:
            check = await asyncio.to_thread(load_uploads, uploads, self.settings)
            if check.errors:
                await ui.notify("\n\n".join(replies.error_markdown(e) for e in check.errors))
            if not check.accepted:
                return  # the session keeps its earlier images and stays usable
            session.replace_images([SessionImage(upload, loaded.image_wh) for upload, loaded in check.accepted])
            fresh = [loaded for _, loaded in check.accepted]
        if not session.images:
            await ui.notify(replies.no_images_markdown())
            return
        await self._run_selected_task(session, ui, text.strip(), fresh)

    async def _region_picked(self, session: ChatSession, ui: ChatUI, payload: Mapping[str, object]) -> None:
        if payload.get("batch") != session.upload_batch:
            raise InvalidInput(
                "That picker belongs to images you replaced since; use the picker under the latest upload.",
                code="stale_region_picker",
            )
        spec = get_task(str(payload.get("task", "")))
        if not spec.needs_region:
            raise InvalidInput(f"{spec.name} does not take a region.", code="unexpected_region")
        index, xyxy = region_from_payload(payload, len(session.images))
        title = replies.escape_md(spec.name)
        await self._analyze(session, ui, spec, [index], TaskInput(), regions={index: xyxy}, title=title)

    async def _follow_up(self, session: ChatSession, ui: ChatUI, task_key: str) -> None:
        """A follow-up button: run the task on the current images; ask for words first when it needs them."""
        if not session.images:
            await ui.notify(replies.no_images_markdown())
            return
        task = get_chat_task(task_key)
        if is_auto(task):  # the payload comes from the browser; buttons name real tasks
            raise InvalidInput("That button names no task; choose one in the Task picker.", code="invalid_follow_up")
        if task.needs_text or task.needs_labels:
            session.awaiting = task
            await ui.notify(replies.ask_follow_up_text_markdown(task.name))
            return
        await self._run_task(session, ui, task, "", None, Intent(task.key))

    async def _everything(self, session: ChatSession, ui: ChatUI) -> None:
        if not session.images:
            await ui.notify(replies.no_images_markdown())
            return
        everything = [get_task(token) for token in EVERYTHING_TASKS]
        self.services.limiter.hit(session.identity, cost=work_cost(len(session.images), everything))
        for spec in everything:
            await self._ensure_backend_for(ui, spec)
        indices = list(range(len(session.images)))
        pixels = await decode_images(session, indices, None, self.settings)
        images = [pixels[i] for i in indices]
        per_task: dict[str, list[ImageOutcome]] = {}
        for token in EVERYTHING_TASKS:
            spec = get_task(token)
            async with ui.step(spec.name) as step:
                started = time.perf_counter()
                per_task[token] = await self.services.analysis.analyze_async(images, spec)
                finish_step(step, spec.name, len(images), time.perf_counter() - started)
        built = await asyncio.to_thread(everything_replies, images, per_task)
        named = [(im.name, o.result) for im, o in zip(images, per_task["<OD>"], strict=True)]
        if (combined := replies.combined_coco_download("OD", named)) is not None:
            built[-1] = dataclasses.replace(built[-1], downloads=[*built[-1].downloads, combined])
        session.remember_detections(_detections(per_task["<OD>"], indices))
        await ui.show_replies(with_follow_ups(built, "EVERYTHING"))

    # -- the selected task -----------------------------------------------------------------------------
    async def _run_selected_task(
        self, session: ChatSession, ui: ChatUI, text: str, fresh: Sequence[LoadedImage] | None
    ) -> None:
        """Run the picked task, or in Auto mode the task the message asks for (`app.chat.intent`)."""
        task, awaiting = session.task, session.awaiting
        session.awaiting = None
        if awaiting is not None and text:  # the words a follow-up button asked for
            intent = Intent(awaiting.key, text)
            task = awaiting
        elif is_auto(task):
            intent = understand(text)
            task = get_chat_task(intent.task_key)
            if not intent.recognised and text:
                await ui.notify(replies.not_understood_markdown(text, task.name))
        else:  # the picker's task: the message is its input, if it takes one
            intent = Intent(task.key, text if takes_message(task) else "")
        await self._run_task(session, ui, task, intent.text, fresh, intent)

    async def _run_task(
        self,
        session: ChatSession,
        ui: ChatUI,
        spec: TaskSpec,
        text: str,
        fresh: Sequence[LoadedImage] | None,
        intent: Intent,
    ) -> None:
        """The message's words become what the task's registry entry says it takes."""
        title = intent.described(spec.name)
        indices = list(range(len(session.images)))
        if spec.input_kind is InputKind.NONE:  # CHAT_TOP_N matters only to tasks that rank classes
            await self._analyze(session, ui, spec, indices, TaskInput(top_n=CHAT_TOP_N), fresh=fresh, title=title)
        elif not text and spec.input_kind is not InputKind.REGION:
            await ui.notify(replies.ask_labels_markdown(spec) if spec.needs_labels else replies.ask_text_markdown(spec))
        elif spec.input_kind is InputKind.TEXT:
            task_input = TaskInput(text=classes_from_chat(spec, text))
            await self._analyze(session, ui, spec, indices, task_input, fresh=fresh, title=title)
        elif spec.input_kind is InputKind.LABELS:
            labels, categories = labels_from_text(text)
            # One label gets an independent score (a softmax over one label would always say 100%).
            request = ZeroShotRequest.create(labels, categories, multi_label=len(set(labels)) == 1)
            await self._analyze(session, ui, spec, indices, TaskInput(labels=request), fresh=fresh, title=title)
        else:
            found = regions_from_text(text, len(indices), session.detections) if text else None
            if found is None:
                await self._ask_region(session, ui, spec, fresh)
                return
            regions = dict(enumerate(found))
            await self._analyze(session, ui, spec, indices, TaskInput(), regions, fresh=fresh, title=title)

    async def _ask_region(
        self, session: ChatSession, ui: ChatUI, spec: TaskSpec, fresh: Sequence[LoadedImage] | None
    ) -> None:
        indices = list(range(min(MAX_PICKERS, len(session.images))))
        pixels = await decode_images(session, indices, fresh, self.settings)
        sources = await asyncio.to_thread(lambda: [picker_data_url(pixels[i].image) for i in indices])
        pickers = [
            RegionPicker(
                i, pixels[i].name, pixels[i].image_wh, src, spec.token, spec.name, session.upload_batch,
                boxes=_pickable_boxes(session.detections.get(i)),
            )
            for i, src in zip(indices, sources, strict=True)
        ]  # fmt: skip
        await ui.ask_region(replies.ask_region_markdown(spec, bool(session.detections)), pickers)

    async def _analyze(
        self,
        session: ChatSession,
        ui: ChatUI,
        spec: TaskSpec,
        indices: Sequence[int],
        task_input: TaskInput,
        regions: Mapping[int, XYXY | AppError] | None = None,
        fresh: Sequence[LoadedImage] | None = None,
        title: str = "",
    ) -> None:
        """Check the input, rate-limit, load the model if needed, run one task on the chosen images, show one
        reply each. `regions` gives each image its own region (`box N`); `title` (markdown) says how the
        message was understood and every reply's heading carries it."""
        groups = [
            (group, region if isinstance(region, AppError) else self._checked(spec, task_input, region))
            for group, region in _group_by_region(indices, regions)
        ]  # a bad input is refused here: before the rate limit and any model work
        self.services.limiter.hit(session.identity, cost=work_cost(len(indices), [spec]))
        await self._ensure_backend_for(ui, spec)
        pixels = await decode_images(session, indices, fresh, self.settings)
        outcomes: dict[int, ImageOutcome] = {}
        async with ui.step(spec.name) as step:
            started = time.perf_counter()
            for group, checked in groups:
                if isinstance(checked, AppError):
                    outcomes.update({i: ImageOutcome(pixels[i].name, error=checked) for i in group})
                    continue
                images = [pixels[i] for i in group]
                results = await self.services.analysis.analyze_async(images, spec, options=checked)
                outcomes.update(zip(group, results, strict=True))
            seconds = time.perf_counter() - started
            log.info("chat %s on %d image(s) in %.2fs", spec.short_name, len(indices), seconds)
            finish_step(step, spec.name, len(indices), seconds, failed=all(o.result is None for o in outcomes.values()))
        ordered = [(pixels[i], outcomes[i]) for i in indices]
        built = await asyncio.to_thread(task_replies, spec, ordered, title or replies.escape_md(spec.name), task_input)
        combined = replies.combined_coco_download(spec.short_name, [(im.name, o.result) for im, o in ordered])
        if combined is not None:  # on the last reply, next to the buttons: it covers the whole message
            built[-1] = dataclasses.replace(built[-1], downloads=[*built[-1].downloads, combined])
        session.remember_detections(_detections([o for _, o in ordered], indices))
        await ui.show_replies(with_follow_ups(built, spec.short_name))

    def _checked(self, spec: TaskSpec, task_input: TaskInput, region: XYXY | None) -> TaskInput:
        with_region = dataclasses.replace(task_input, region=region) if region is not None else task_input
        return self.services.analysis.check_input(spec, with_region)[1]

    async def _ensure_backend_for(self, ui: ChatUI, spec: TaskSpec) -> None:
        # OCR_BACKEND=rapidocr serves OCR without Florence-2: load what the task's backend is, not always Florence.
        await ensure_backend(ui, self.services.manager, self.services.manager.backend_name(spec))


def _group_by_region(
    indices: Sequence[int], regions: Mapping[int, XYXY | AppError] | None
) -> list[tuple[list[int], XYXY | AppError | None]]:
    """Images sharing a region run as one batch; `box N` gives each image its own region."""
    if regions is None:
        return [(list(indices), None)]
    groups: dict[object, tuple[list[int], XYXY | AppError]] = {}
    for index in indices:
        region = regions[index]
        key: object = id(region) if isinstance(region, AppError) else region
        groups.setdefault(key, ([], region))[0].append(index)
    return list(groups.values())


def _pickable_boxes(result: BoxedResult | None) -> tuple[tuple[int, str, XYXY], ...]:
    """The numbered boxes a region picker offers to start from (the first MAX_PICKER_BOXES)."""
    if result is None:
        return ()
    numbered = zip(range(1, MAX_PICKER_BOXES + 1), result.labels, numbered_boxes(result), strict=False)
    return tuple((n, label, box) for n, label, box in numbered if box is not None)


def _detections(outcomes: Sequence[ImageOutcome], indices: Sequence[int]) -> dict[int, BoxedResult]:
    """The numbered boxes a reply showed, per image: what `box N` refers to next."""
    return {
        index: outcome.result
        for index, outcome in zip(indices, outcomes, strict=True)
        if isinstance(outcome.result, DetectionResult | SegmentationResult) and len(outcome.result)
    }
