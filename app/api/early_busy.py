"""Admit model work at the door, before its body is read: a bounded number at once, a short wait, then 503 `busy`.

Under overload most requests end in `busy` anyway; refusing them after the body was received, parsed,
authenticated and its images decoded spends the cores that should be serving. So the synchronous model
routes pass an admission gate first, which costs a counter check:

- At most `capacity` requests (the model queue plus one running batch) are admitted at once, from the
  first byte of their body to their answer. Requests being read or decoded are counted too, so the
  model queue itself never has to refuse work that was already decoded.
- A request that finds the gate full, or the model queue full of other work (chat, jobs), is *held*
  for up to `hold_s` (`BUSY_HOLD_S`) before anything of it is read: it is admitted, first come first
  served, when a place frees, else refused with 503 `busy` and `Retry-After`. A held request costs an
  idle connection and no CPU; clients that retry at once without backoff would otherwise spin on the
  same cores as the model (docs/RELIABILITY.md, "Overload"). At most `max_held` (`BUSY_HOLD_MAX`) wait
  at once; beyond that, and with `hold_s = 0`, the refusal is immediate.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_json
from app.core.config import Settings
from app.models.manager import resolve_max_batch_size
from app.services.fifo_allowance import FifoAllowance

# The synchronous routes that queue model work (jobs are queued and worked on later; they are not refused).
_MODEL_ROUTES = re.compile(r"^/api/(v1/analyze|v1/classify|classify(/[^/]+)?|zero-shot)/?$")
RETRY_AFTER_S = 5
DRAIN_MAX_BYTES = 64 * 1024
QUEUE_POLL_S = 0.05  # how often a held request looks at a model queue filled by other work (chat, jobs)


class AdmissionGate:
    """Places for model requests, handed out first come, first served, with a bounded waiting line."""

    def __init__(self, capacity: int, max_held: int) -> None:
        self.max_held = max_held
        self._places = FifoAllowance(capacity)

    @property
    def admitted(self) -> int:
        return self._places.used

    @property
    def held(self) -> int:
        return self._places.waiting

    async def enter(self, wait_s: float) -> bool:
        """True once admitted (call `leave` after); False when the line is full or `wait_s` passed first."""
        return await self._places.acquire(1, wait_s, max_waiting=self.max_held)

    def leave(self) -> None:
        self._places.release(1)


def admission_capacity(settings: Settings) -> int:
    """The model queue plus one running batch: what the model can hold without refusing (32 + 1 on CPU)."""
    device = "cuda" if settings.device == "cuda" else "cpu"
    if settings.device == "auto" and settings.max_batch_size == 0:
        from app.serving.startup_checks import choose_device  # imports torch: only when the batch size depends on it

        device = choose_device(settings).device
    return settings.max_queue_size + resolve_max_batch_size(settings, device)


class EarlyBusyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, gate: AdmissionGate | None = None) -> None:
        self.app = app
        self.max_queue_size = settings.max_queue_size
        # The body's deadline (HTTP_BODY_TIMEOUT_S) runs from the request head: a hold must leave time to read it.
        self.hold_s = min(settings.busy_hold_s, settings.http_body_timeout_s / 2)
        self._settings = settings
        self._gate = gate

    @property
    def gate(self) -> AdmissionGate:
        if self._gate is None:  # sized on first use: the device decides the batch size
            self._gate = AdmissionGate(admission_capacity(self._settings), self._settings.busy_hold_max)
        return self._gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _MODEL_ROUTES.match(scope.get("path", "")):
            services = getattr(scope["app"].state, "services", None) if "app" in scope else None
            if services is not None:
                gate = self.gate
                if not await self._admit(gate, lambda: int(services.manager.queue_depth)):
                    await self._refuse(scope, receive, send)
                    return
                try:
                    await self.app(scope, receive, send)
                finally:
                    gate.leave()
                return
        await self.app(scope, receive, send)

    async def _admit(self, gate: AdmissionGate, queue_depth: Callable[[], int]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold_s
        if not await gate.enter(self.hold_s):
            return False
        while queue_depth() >= self.max_queue_size:  # full of other work: wait for it within the same hold
            if loop.time() >= deadline:
                gate.leave()
                return False
            try:
                await asyncio.sleep(min(QUEUE_POLL_S, max(0.0, deadline - loop.time())))
            except BaseException:
                gate.leave()
                raise
        return True

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A small body is drained (it is in the socket buffer already) so the connection stays usable:
        # a reconnect per refusal costs more than the refusal. A large one is not read.
        keep_alive = await _drain_small_body(scope, receive)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        if not keep_alive:
            headers["Connection"] = "close"
        message = "The model is busy with other requests; try again in a few seconds."
        await error_json(503, "busy", message, headers=headers)(scope, receive, send)


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
