"""Chainlit's own HTTP routes, guarded: client input gets a 4xx in our error shape, never a traceback.

Chainlit 2.x answers some requests anyone can send with an unhandled exception (plain-text 500 and a
long traceback in the log): a `sessionId` that names no live chat session (`ValueError`), `/auth/jwt`
when the chat has no login (`AssertionError`), a NUL byte in a `/public/...` path (`ValueError`).
`ChatGuard` sits in front of the mounted Chainlit app and refuses those requests before Chainlit sees
them; whatever still fails inside Chainlit is answered by `on_chat_error` with one log line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Routes whose JSON body names a chat session that Chainlit looks up without checking it exists.
_SESSION_ROUTES = {
    ("POST", "/project/action"),
    ("PUT", "/project/element"),
    ("DELETE", "/project/element"),
    ("PUT", "/feedback"),
}
MAX_SESSION_BODY_BYTES = 1024 * 1024  # an action or element update is a few KB
# The address of the client whose HTTP request is running (Chainlit's login callback gets no request).
_client_address: ContextVar[str] = ContextVar("chat_client_address", default="unknown")


def current_client_address() -> str:
    """The client address of the chat HTTP request being handled (after trusted forwarded headers)."""
    return _client_address.get()


def socket_client_address(environ: Mapping[str, Any]) -> str:
    """The client address of a chat websocket connection, from the environ python-socketio builds."""
    return str(environ.get("REMOTE_ADDR") or "unknown")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


class ChatGuard:
    """ASGI wrapper around the mounted Chainlit app (HTTP only; websockets pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        client = scope.get("client")
        _client_address.set(str(client[0]) if client else "unknown")
        refusal = self._refuse_early(path)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if (method, path) in _SESSION_ROUTES:
            body, refusal = await self._read_session_body(receive)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            receive = _replay(body, receive)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the chat's last line: no traceback reaches the server log
            # `on_chat_error` has answered and logged it; Starlette re-raises after its 500 handler.
            if not started:
                log.error("chat %s %s failed: %s", method, path[:200], type(exc).__name__)
                await _error(500, "internal_error", "The chat server failed on this request.")(scope, receive, send)

    @staticmethod
    def _refuse_early(path: str) -> JSONResponse | None:
        if "\x00" in path:
            return _error(400, "invalid_path", "The path contains a NUL byte.")
        if path == "/mcp" or path.startswith("/mcp/"):
            return _error(404, "not_found", "MCP connections are not enabled on this server.")
        if path == "/auth/jwt" and not _jwt_login_enabled():
            return _error(404, "not_found", "Chat login is not enabled on this server.")
        return None

    @staticmethod
    async def _read_session_body(receive: Receive) -> tuple[bytes, JSONResponse | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", _error(400, "client_disconnected", "The client went away.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_SESSION_BODY_BYTES:
                return b"", _error(413, "request_too_large", "The request body is too large for this route.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            session_id = json.loads(body).get("sessionId")
        except (ValueError, AttributeError, RecursionError):
            return body, None  # Chainlit's own validation answers 422
        if isinstance(session_id, str) and not _is_live_session(session_id):
            return body, _error(404, "session_not_found", "No such chat session; reload the chat page.")
        return body, None


def _jwt_login_enabled() -> bool:
    from chainlit.auth import require_login

    return require_login() and bool(os.environ.get("CHAINLIT_AUTH_SECRET"))


def _is_live_session(session_id: str) -> bool:
    from chainlit.session import WebsocketSession

    return WebsocketSession.get_by_id(session_id) is not None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def on_chat_error(request: Request, exc: Exception) -> JSONResponse:
    """Chainlit's 500 handler: our error shape and one log line (the traceback only at DEBUG)."""
    log.error("chat %s %s failed: %s: %s", request.method, request.url.path[:200], type(exc).__name__, str(exc)[:200])
    log.debug("chat route traceback", exc_info=exc)
    return _error(500, "internal_error", "The chat server failed on this request; the details are in the server log.")
