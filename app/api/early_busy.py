"""Refuse model work with 503 `busy` before reading its body when the model queue is already full.

Under overload most requests end in `busy` anyway; refusing them after the body was received,
parsed, authenticated and its images decoded spends the cores that should be serving. This check
costs one attribute read, so at 64 clients the server keeps its throughput (docs/RELIABILITY.md).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_json

# The synchronous routes that queue model work (jobs are queued and worked on later; they are not refused).
_MODEL_ROUTES = re.compile(r"^/api/(v1/analyze|v1/classify|classify(/[^/]+)?|zero-shot)/?$")
RETRY_AFTER_S = 5
DRAIN_MAX_BYTES = 64 * 1024


class EarlyBusyMiddleware:
    def __init__(self, app: ASGIApp, max_queue_size: int) -> None:
        self.app = app
        self.max_queue_size = max_queue_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _MODEL_ROUTES.match(scope.get("path", "")):
            services = getattr(scope["app"].state, "services", None) if "app" in scope else None
            if services is not None and services.manager.queue_depth >= self.max_queue_size:
                # A small body is drained (it is in the socket buffer already) so the connection stays
                # usable: a reconnect per refusal costs more than the refusal. A large one is not read.
                keep_alive = await _drain_small_body(scope, receive)
                headers = {"Retry-After": str(RETRY_AFTER_S)}
                if not keep_alive:
                    headers["Connection"] = "close"
                message = "The model is busy with other requests; try again in a few seconds."
                await error_json(503, "busy", message, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _drain_small_body(scope: Scope, receive: Receive) -> bool:
    """Read and drop a body of at most `DRAIN_MAX_BYTES` declared bytes; False when it is not drained."""
    declared = dict(scope.get("headers") or []).get(b"content-length", b"")
    if not declared.isdigit() or int(declared) > DRAIN_MAX_BYTES:
        return False
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        received += len(message.get("body", b""))
        if received > DRAIN_MAX_BYTES:
            return False
        if not message.get("more_body", False):
            return True
