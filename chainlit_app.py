"""The Chainlit chat: a thin adapter from Chainlit events to `app.chat.flow` and back to Chainlit elements.

Loaded by Chainlit itself (mounted by `app.serving.server`); the services come from the server's lifespan.
Conversation logic lives in `app.chat`; this module only picks the task, unpacks messages and renders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import chainlit as cl

from app.chat.catalogue import DEFAULT_TASK, chat_tasks, get_chat_task, picker_hint, picker_icon
from app.chat.flow import ChatFlow
from app.chat.guard import socket_client_address
from app.chat.inputs import Upload
from app.chat.replies import error_markdown, welcome_markdown
from app.chat.samples import STARTERS
from app.chat.session import ChatSession
from app.chat.ui import FollowUp, ImageReply, RegionPicker
from app.core.errors import AppError
from app.services.container import get_services

SESSION_KEY = "chat_session"
OFFERED_ACTIONS_KEY = "chat_offered_actions"
TASK_MODE_ID = "task"
EVERYTHING_ACTION = "analyze_everything"
FOLLOW_UP_ACTION = "follow_up"
STARTER_ACTION = "starter"
REGION_ACTION = "region_picked"  # called by public/elements/RegionPicker.jsx
REGION_PICKER_ELEMENT = "RegionPicker"


def task_modes() -> list[cl.Mode]:
    """The composer's Task picker: Auto and every registered task (read now: a task registered since shows)."""
    default = get_chat_task(DEFAULT_TASK)
    options = [
        cl.ModeOption(
            id=task.key,
            name=task.name,
            description=task.description + picker_hint(task),
            icon=picker_icon(task),
            default=task is default,
        )
        for task in chat_tasks()
    ]
    return [cl.Mode(id=TASK_MODE_ID, name="Task", options=options)]


def _flow() -> ChatFlow:
    return ChatFlow(get_services())


def _session() -> ChatSession:
    existing = cl.user_session.get(SESSION_KEY)
    if isinstance(existing, ChatSession):
        return existing
    user = cl.user_session.get("user")
    identifier = getattr(user, "identifier", None)
    # Without a login, the client's address: a new chat (a new session id) must not reset the limit.
    address = socket_client_address(cl.context.session.environ)
    identity = f"chat-user:{identifier}" if identifier else f"chat-client:{address}"
    created = ChatSession(identity=identity)
    cl.user_session.set(SESSION_KEY, created)
    return created


class _Step:
    def __init__(self, step: cl.Step) -> None:
        self.step = step

    def finish(self, title: str, detail: str) -> None:
        # Chainlit fetches an avatar named after the step: keep names to letters, digits, spaces, "." and "-".
        self.step.name, self.step.output = title, detail

    def fail(self, title: str, detail: str) -> None:
        self.step.name, self.step.output, self.step.is_error = title, detail, True


class _Progress:
    def __init__(self, message: cl.Message) -> None:
        self.message = message

    async def show(self, markdown: str) -> None:
        self.message.content = markdown
        await self.message.update()


class ChainlitUI:
    """`app.chat.flow.ChatUI` on Chainlit messages, steps and elements."""

    async def notify(self, markdown: str) -> None:
        await cl.Message(content=markdown).send()

    async def show_replies(self, replies: Sequence[ImageReply]) -> None:
        for position, reply in enumerate(replies):
            elements: list[Any] = []
            if reply.picture is not None:
                elements.append(
                    cl.Image(
                        name=reply.picture_name,
                        content=reply.picture.content,
                        mime=reply.picture.mime,
                        display="inline",
                        size=reply.picture_size,
                    )
                )
            elements.extend(
                cl.File(name=d.name, content=d.content, mime=d.mime, display="inline") for d in reply.downloads
            )
            last = position == len(replies) - 1
            actions = [*(_follow_up_action(f) for f in reply.follow_ups), _everything_action()] if last else []
            if actions:
                await _withdraw_offered_actions()
                cl.user_session.set(OFFERED_ACTIONS_KEY, actions)
            message = cl.Message(content=reply.markdown, actions=actions)
            await message.send()
            # One at a time: Chainlit sends a message's own elements concurrently, so their order would vary.
            for element in elements:
                await element.send(for_id=message.id)

    async def ask_region(self, markdown: str, pickers: Sequence[RegionPicker]) -> None:
        elements = [
            cl.CustomElement(name=REGION_PICKER_ELEMENT, props=picker.props(), display="inline") for picker in pickers
        ]
        await cl.Message(content=markdown, elements=elements).send()

    @asynccontextmanager
    async def progress(self, markdown: str, failed: str) -> AsyncIterator[_Progress]:
        message = cl.Message(content=markdown)
        await message.send()
        try:
            yield _Progress(message)
        except Exception:
            message.content = failed
            await message.update()
            raise

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[_Step]:
        step = cl.Step(name=name, type="tool", show_input=False)
        failure: Exception | None = None
        async with step:
            try:
                yield _Step(step)
            except Exception as exc:  # noqa: BLE001 - shown as a failed step, then re-raised for the chat message
                failure = exc
                step.is_error = True
                step.output = exc.message if isinstance(exc, AppError) else "Failed."
        if failure is not None:
            raise failure


def _everything_action() -> cl.Action:
    return cl.Action(
        name=EVERYTHING_ACTION,
        payload={},
        label="Analyze everything",
        tooltip="Caption, object detection and OCR on the current image(s), in one reply",
        icon="sparkles",
    )


def _follow_up_action(follow_up: FollowUp) -> cl.Action:
    return cl.Action(
        name=FOLLOW_UP_ACTION, payload={"task": follow_up.task_key}, label=follow_up.label, tooltip=follow_up.tooltip
    )


async def _withdraw_offered_actions() -> None:
    """Only the newest reply keeps its button, so an old one cannot look tied to old images."""
    for action in cl.user_session.get(OFFERED_ACTIONS_KEY) or []:
        await action.remove()
    cl.user_session.set(OFFERED_ACTIONS_KEY, [])


def _uploads(message: cl.Message) -> list[Upload]:
    return [
        Upload(name=element.name or "image", path=Path(element.path) if element.path else None)
        for element in message.elements or []
    ]


@cl.on_chat_start
async def on_chat_start() -> None:
    _session()
    await cl.context.emitter.set_modes(task_modes())
    try:
        services = get_services()
        text = welcome_markdown(services.manager.status(), services.settings, services.manager.primary)
    except Exception as exc:  # noqa: BLE001 - the welcome must never fail the page
        text = error_markdown(exc)
    # Starters as buttons on the welcome: Chainlit's own starters only show in a chat with no message at all.
    starters = [
        cl.Action(name=STARTER_ACTION, payload={"message": s.message}, label=s.label, tooltip=s.message, icon="image")
        for s in STARTERS
    ]
    await cl.Message(content=text, actions=starters).send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    task_key = (message.modes or {}).get(TASK_MODE_ID)
    await _flow().on_message(_session(), ChainlitUI(), message.content or "", _uploads(message), task_key)


@cl.action_callback(EVERYTHING_ACTION)
async def on_analyze_everything(action: cl.Action) -> None:
    await _flow().on_analyze_everything(_session(), ChainlitUI())


@cl.action_callback(FOLLOW_UP_ACTION)
async def on_follow_up(action: cl.Action) -> None:
    await _flow().on_follow_up(_session(), ChainlitUI(), str((action.payload or {}).get("task", "")))


@cl.action_callback(STARTER_ACTION)
async def on_starter(action: cl.Action) -> None:
    message = str((action.payload or {}).get("message", ""))
    if message in {s.message for s in STARTERS}:  # the payload comes from the browser: only our own starters
        await _flow().on_message(_session(), ChainlitUI(), message, [], "AUTO")


@cl.action_callback(REGION_ACTION)
async def on_region_picked(action: cl.Action) -> None:
    await _flow().on_region_picked(_session(), ChainlitUI(), action.payload or {})
