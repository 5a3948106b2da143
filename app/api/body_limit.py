"""413 before a huge API body is parsed: Content-Length is checked up front, the stream is counted."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import call_or_refuse, error_json
from app.core.errors import PayloadTooLarge

API_PREFIX = "/api/"


class BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` mid-stream; the error handlers (or this middleware) answer 413."""


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"The request body is over the {self.max_bytes:,}-byte limit (MAX_REQUEST_BYTES).",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            error = self._error()
            # Answer without reading a byte of the body; the server closes the connection after it.
            await error_json(413, error.code, error.message, headers={"Connection": "close"})(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await call_or_refuse(self.app, scope, counting_receive, send, BodyTooLarge)
