"""Chainlit inside our FastAPI app: the mount, its start-up/shutdown hooks, login, limits, offline page.

Chainlit is a process-wide singleton (one config, one ASGI app), so the first `mount_chat` loads the
chat module and later calls (tests build several apps) mount that same Chainlit app again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.types import ASGIApp

from app.chat.auth import ChatUsers, chat_login
from app.chat.guard import ChatGuard, current_client_address, on_chat_error
from app.core.config import Settings
from app.core.errors import AppError, RateLimited
from app.services.container import get_services

if TYPE_CHECKING:
    import chainlit as cl

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAINLIT_MODULE = REPO_ROOT / "chainlit_app.py"
ACCEPTED_IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/x-ms-bmp",
    "image/tiff",
)
# Chainlit's page links Google Fonts (with preconnects) and a KaTeX stylesheet from a CDN. Offline, a
# hanging connection delays the first render by ~20 s; we use neither (system fonts, LaTeX off).
_EXTERNAL_LINK_RE = re.compile(r"<link\b[^>]*\bhref=[\"']https?://[^>]*>", re.IGNORECASE)

_mounted = False


def mount_chat(app: FastAPI, settings: Settings) -> None:
    """Serve the chat at `/` of `app`. Call after every other route: the mount catches all paths."""
    global _mounted
    # Chainlit finds `public/`, `.chainlit/` and `chainlit.md` under its app root, read once at import.
    os.environ.setdefault("CHAINLIT_APP_ROOT", str(REPO_ROOT))
    _quiet_translation_copies()
    import chainlit.server as chainlit_server
    from chainlit.config import config

    _configure_login(settings)
    _apply_upload_limits(settings)
    _explain_refused_uploads(chainlit_server, settings)
    config.features.latex = False
    if not _mounted:
        from chainlit.utils import mount_chainlit

        mount_chainlit(app=app, target=str(CHAINLIT_MODULE), path="/")
        chainlit_server.get_html_template = _without_external_links(chainlit_server.get_html_template)
        chainlit_server.app.add_exception_handler(Exception, on_chat_error)
        _mounted = True
    else:
        app.mount("/", chainlit_server.app)
    _guard_chat_mount(app, chainlit_server.app)


def _guard_chat_mount(app: FastAPI, chainlit_app: ASGIApp) -> None:
    """Put `ChatGuard` in front of the Chainlit mount (Chainlit's `mount_chainlit` mounts it bare)."""
    for route in app.router.routes:
        if isinstance(route, Mount) and route.app is chainlit_app:
            route.app = ChatGuard(chainlit_app)


@asynccontextmanager
async def chat_lifespan() -> AsyncIterator[None]:
    """Chainlit's own start-up/shutdown hooks; a mounted Chainlit app never runs its lifespan itself.

    (Its lifespan also ends the process with `os._exit`, so we run the hooks rather than the lifespan.)
    """
    from chainlit.config import config
    from chainlit.data import get_data_layer
    from chainlit.session import ws_sessions_id

    if config.code.on_app_startup:
        await config.code.on_app_startup()
    try:
        yield
    finally:
        if config.code.on_app_shutdown:
            await config.code.on_app_shutdown()
        if data_layer := get_data_layer():
            await data_layer.close()
        # Uploaded files of this process's sessions (Chainlit would delete all of `.files`, which
        # another server started from the same directory may still be using).
        for session in list(ws_sessions_id.values()):
            try:
                await session.delete()
            except Exception:  # clean-up must not stop the shutdown
                log.warning("could not delete the files of chat session %s", session.id, exc_info=True)


def _without_external_links(render: Callable[[str], str]) -> Callable[[str], str]:
    @functools.wraps(render)
    def render_offline(root_path: str) -> str:
        return _EXTERNAL_LINK_RE.sub("", render(root_path))

    return render_offline


def _apply_upload_limits(settings: Settings) -> None:
    """The browser-side limits follow the settings (the server checks again by decoding each file)."""
    from chainlit.config import SpontaneousFileUploadFeature, config

    config.features.spontaneous_file_upload = SpontaneousFileUploadFeature(
        enabled=True,
        accept=list(ACCEPTED_IMAGE_TYPES),
        max_files=settings.max_images_per_request,
        max_size_mb=max(1, math.ceil(settings.max_image_bytes / 2**20)),
    )


class _DropTranslationCopies(logging.Filter):
    """Chainlit logs one line per translation file it copies into `.chainlit/translations` (24 on a
    first start): routine set-up, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Created default translation", "Translated markdown file"))


def _quiet_translation_copies() -> None:
    chainlit_log = logging.getLogger("chainlit")
    if not any(isinstance(f, _DropTranslationCopies) for f in chainlit_log.filters):
        chainlit_log.addFilter(_DropTranslationCopies())


def _explain_refused_uploads(chainlit_server: Any, settings: Settings) -> None:
    """Chainlit's upload route answers an empty file with a 500 and a traceback, and a too-large one with
    "File size too large". Its check runs first in the route, so a check in front of it turns both into a
    400 that says what is wrong and the limit (the chat decodes every file again anyway)."""
    original = getattr(chainlit_server.validate_file_upload, "__wrapped__", chainlit_server.validate_file_upload)
    limit_mb = max(1, math.ceil(settings.max_image_bytes / 2**20))

    @functools.wraps(original)
    def validate(file: Any, spec: Any = None) -> None:
        name = str(getattr(file, "filename", "") or "The file")[:80]
        size = getattr(file, "size", None)
        if size == 0:
            raise ValueError(f"{name} is empty (0 bytes): send an image file of up to {limit_mb} MB.")
        if size is not None and size > settings.max_image_bytes:
            raise ValueError(f"{name} is {size / 2**20:.1f} MB: images are limited to {limit_mb} MB each.")
        original(file, spec)

    chainlit_server.validate_file_upload = validate


def _configure_login(settings: Settings) -> None:
    """Password login when `CHAT_USERS` is set; an open chat otherwise."""
    import chainlit as cl
    from chainlit.config import config

    users, secret = chat_login(settings)
    if not users.enabled:
        config.code.password_auth_callback = None
        return
    os.environ["CHAINLIT_AUTH_SECRET"] = secret  # Chainlit reads it from the environment
    cl.password_auth_callback(functools.partial(_login, users))


async def _login(users: ChatUsers, username: str, password: str) -> cl.User | None:
    import chainlit as cl

    try:
        # Attempts count per (client address, user name) in their own bucket: guessing is as slow as
        # RATE_LIMIT, and nobody else (another address, an API token's `sub`) can lock a user out.
        get_services().limiter.hit(f"{current_client_address()}|{username[:100]}", namespace="chat-login")
    except RateLimited:
        log.warning("chat login rate-limited for a user name")
        return None
    except AppError:
        return None
    if await asyncio.to_thread(users.authenticate, username, password):
        return cl.User(identifier=username, metadata={"provider": "password"})
    return None
