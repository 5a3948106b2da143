"""Connection hygiene on a real uvicorn server configured exactly as `serve` runs it (raw sockets on 127.0.0.1).

Timeouts are set to 1-2 s here; each test waits for the server to act (a socket read with a deadline),
never for a fixed time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.config import Settings
from app.serving.http_limits import uvicorn_config
from app.serving.server import create_app
from tests.api_support import api_settings
from tests.jobs_support import wait_for

HEADER_TIMEOUT_S = 1.0
KEEPALIVE_S = 1.0
BODY_TIMEOUT_S = 2.0
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 50


@pytest.fixture(scope="module")
def server_port(tiny_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    import uvicorn

    settings = api_settings(
        tiny_settings,
        data_dir=tmp_path_factory.mktemp("http-limits"),
        auth_disabled=True,
        rate_limit="3/minute",
        preload=False,
        embedded_worker=False,
        http_header_timeout_s=HEADER_TIMEOUT_S,
        http_keepalive_timeout_s=KEEPALIVE_S,
        http_body_timeout_s=BODY_TIMEOUT_S,
        http_max_header_bytes=MAX_HEADER_BYTES,
        http_max_headers=MAX_HEADERS,
    )
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield int(port)
    server.should_exit = True
    thread.join(timeout=30)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(within_s)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks), time.monotonic() - started
        chunks.append(chunk)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def error_code(response: bytes) -> str:
    return str(json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"])


def test_an_idle_connection_is_closed_after_the_header_timeout(server_port: int) -> None:
    with connect(server_port) as sock:
        data, elapsed = read_until_closed(sock, within_s=HEADER_TIMEOUT_S + 8)
    assert data == b""
    assert elapsed < HEADER_TIMEOUT_S + 4  # margin for a loaded machine


def test_a_slow_request_head_gets_408_and_is_closed(server_port: int) -> None:
    with connect(server_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        data, elapsed = read_until_closed(sock, within_s=HEADER_TIMEOUT_S + 8)
    assert status_of(data) == 408 and error_code(data) == "request_timeout"
    assert elapsed < HEADER_TIMEOUT_S + 4  # margin for a loaded machine


def test_a_slow_body_gets_408_and_is_closed(server_port: int) -> None:
    with connect(server_port) as sock:
        sock.sendall(
            b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"task": '
        )
        data, elapsed = read_until_closed(sock, within_s=BODY_TIMEOUT_S + 8)
    assert status_of(data) == 408 and error_code(data) == "request_timeout"
    assert elapsed < BODY_TIMEOUT_S + 4


def test_an_aborted_upload_is_not_logged_as_an_error(server_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with connect(server_port) as sock:
        sock.sendall(
            b"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"task": "CAPTION", "images": ["'
        )  # and the client goes away

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "client disconnected" in r.getMessage()]

    (record,) = wait_for(logged, 10, "the server to notice the disconnect")
    assert record.levelno == logging.DEBUG
    with connect(server_port) as sock:  # a round trip later, the aborted request's task has ended too
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(read_until_closed(sock, within_s=10)[0]) == 200
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_idle_keep_alive_connection_is_closed(server_port: int) -> None:
    with connect(server_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, elapsed = read_until_closed(sock, within_s=KEEPALIVE_S + 8)
    assert status_of(data) == 200
    assert elapsed < KEEPALIVE_S + 4


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_000_000, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100_000)),
         "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(60)) + b"\r\n",
         "too_many_headers"),
    ],
    ids=["100kb-header", "16mb-header", "100000-headers", "60-headers"],
)  # fmt: skip
def test_oversized_request_heads_get_431(server_port: int, head: bytes, code: str) -> None:
    with connect(server_port) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)  # the server may answer and close before the whole head is sent
        data, _ = read_until_closed(sock, within_s=10)
    assert status_of(data) == 431
    assert error_code(data) == code


def test_forwarded_for_from_loopback_is_not_believed(server_port: int) -> None:
    """Without FORWARDED_ALLOW_IPS the per-address limit (auth disabled) cannot be dodged by a header."""
    body = json.dumps({"task": "CAPTION", "images": [{"base64": base64.b64encode(b"not an image").decode()}]})
    statuses = []
    for i in range(5):
        with connect(server_port) as sock:
            sock.sendall(
                f"POST /api/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-Forwarded-For: 203.0.113.{i}\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )
            data, _ = read_until_closed(sock, within_s=10)
        statuses.append(status_of(data))
    assert statuses == [415, 415, 415, 429, 429]


def test_serve_uses_this_configuration(
    monkeypatch: pytest.MonkeyPatch, tiny_settings: Settings, tmp_path: Path
) -> None:
    import uvicorn

    from app.serving import server as server_module

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(self.config))
    server_module.serve(api_settings(tiny_settings, data_dir=tmp_path, preload=False), port=18299)
    (config,) = seen
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # OpenMP threads sleep instead of spinning
    assert config.proxy_headers is False
    assert config.limit_concurrency == 1000
    assert config.http.__name__ == "HardenedH11Protocol"  # type: ignore[union-attr]
