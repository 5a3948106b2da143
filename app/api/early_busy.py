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


class EarlyBusyMiddleware:
    def __init__(self, app: ASGIApp, max_queue_size: int) -> None:
        self.app = app
        self.max_queue_size = max_queue_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _MODEL_ROUTES.match(scope.get("path", "")):
            services = getattr(scope["app"].state, "services", None) if "app" in scope else None
            if services is not None and services.manager.queue_depth >= self.max_queue_size:
                response = error_json(
                    503,
                    "busy",
                    "The model is busy with other requests; try again in a few seconds.",
                    headers={"Retry-After": str(RETRY_AFTER_S), "Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
