"""Connection hygiene for the server we ship (uvicorn + h11): timeouts and limits uvicorn lacks.

uvicorn has a keep-alive timeout but no header-read timeout (a connection that never finishes its
request head is held forever), no body-read timeout, and with httptools no header size limit. Here:

- `hardened_protocol(limits)`: uvicorn's h11 protocol plus a header deadline (an idle or slow-header
  connection is closed after `header_timeout_s`; 408 if part of a head arrived) and a head size cap
  (431 past `max_header_bytes`);
- `RequestLimitsMiddleware`: 431 for more than `max_headers` header lines, and 408 when a request body
  takes longer than `body_timeout_s` to arrive;
- `uvicorn_config(...)`: the whole configuration, also used by the tests that attack a real server.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.api.errors import call_or_refuse, error_json
from app.core.config import Settings
from app.core.errors import AppError

# h11 refuses an incomplete head past its own limit with a 400; ours must trip first, so h11's sits one
# socket read (asyncio reads up to 256 KiB) above it.
_H11_SLACK_BYTES = 512 * 1024
_LINGER_S = 2.0


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float
    keepalive_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_headers: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            keepalive_timeout_s=settings.http_keepalive_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            max_connections=settings.max_connections,
        )


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def hardened_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a header deadline and a head size limit."""

    class HardenedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # the answer is sent; drain what the client still sends until it closes
            super().data_received(data)
            if self.transport.is_closing():
                self._disarm_header_timer()
            elif self.conn.their_state is h11.IDLE:  # still waiting for a complete request head
                if len(self.conn.trailing_data[0]) > limits.max_header_bytes:
                    self._refuse(
                        _raw_response(
                            431,
                            "Request Header Fields Too Large",
                            "headers_too_large",
                            f"The request head is over {limits.max_header_bytes:,} bytes.",
                        )
                    )
                elif self._header_timer is None:  # a keep-alive connection starts its next request
                    self._arm_header_timer()
            else:
                self._disarm_header_timer()

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._on_header_timeout)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _on_header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a response is being written; uvicorn's own timers take over
            partial = bool(self.conn.trailing_data[0])
            self._refuse(
                _raw_response(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    f"The request head did not arrive within {limits.header_timeout_s:g} s.",
                )
                if partial
                else b""
            )

        def _refuse(self, response: bytes) -> None:
            self._disarm_header_timer()
            if not response:
                self.transport.close()
                return
            # Closing with unread input makes the kernel send a reset, which can destroy the answer
            # before the client reads it: send it, half-close, and drain for a moment (a lingering close).
            self._refused = True
            self.transport.write(response)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)

    return HardenedH11Protocol


class BodyTimeout(AppError):
    code = "request_timeout"
    http_status = 408


class RequestLimitsMiddleware:
    """431 for too many or too large headers; 408 when the body does not arrive within `body_timeout_s`."""

    def __init__(self, app: ASGIApp, max_headers: int, max_header_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or ()
        if len(headers) > self.max_headers:
            message = f"The request has over {self.max_headers} headers."
            await error_json(431, "too_many_headers", message, headers={"Connection": "close"})(scope, receive, send)
            return
        # A head that arrived whole in one read never waited in the protocol's buffer: its size is checked here.
        if sum(len(name) + len(value) + 4 for name, value in headers) > self.max_header_bytes:
            message = f"The request head is over {self.max_header_bytes:,} bytes."
            await error_json(431, "headers_too_large", message, headers={"Connection": "close"})(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:  # later reads wait for `http.disconnect`, which may take as long as the work
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    f"The request body did not arrive within {self.body_timeout_s:g} s.", code="request_timeout"
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await call_or_refuse(self.app, scope, timed_receive, send, BodyTimeout)


def uvicorn_config(app: Any, settings: Settings, host: str, port: int) -> Any:
    """The uvicorn configuration `serve` runs with (h11 with our limits; no forwarded headers of its own)."""
    import uvicorn

    limits = HttpLimits.from_settings(settings)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        http=hardened_protocol(limits),
        h11_max_incomplete_event_size=limits.max_header_bytes + _H11_SLACK_BYTES,
        timeout_keep_alive=max(1, round(limits.keepalive_timeout_s)),
        limit_concurrency=limits.max_connections,
        # create_app applies FORWARDED_ALLOW_IPS; uvicorn would trust X-Forwarded-For from loopback peers.
        proxy_headers=False,
    )
