"""Helpers for the HTTP API tests: settings with auth, tokens, images, and a real loopback server."""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from app.models.manager import ModelManager
from app.serving.server import create_app
from tests.chat_support import make_services

JWT_SECRET = "test-secret-" + "0123456789abcdef" * 4  # 76 bytes: long enough for HS512 too
AUDIENCE = "florence-api"
ISSUER = "https://issuer.test"
# A tag that makes the browser load something from another host (`//host/...` included).
EXTERNAL_RESOURCE = re.compile(r"<(?:link|script|img|iframe)\b[^>]*\b(?:href|src)=[\"']?(?:https?:)?//", re.I)


def api_settings(base: Settings, **overrides: Any) -> Settings:
    """`base` (the tiny checkpoint) with auth configured, plus `overrides`."""
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "jwt_audience": AUDIENCE,
        "jwt_issuer": ISSUER,
        "preload": True,
        "max_queue_size": 2,
        **overrides,
    }
    return Settings(_env_file=None, **{**base.model_dump(), **values})  # type: ignore[call-arg]


def make_token(
    sub: str = "alice", ttl_s: int = 600, key: Any = JWT_SECRET, algorithm: str = "HS256", **claims: Any
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_s, "aud": AUDIENCE, "iss": ISSUER}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


def auth_header(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or make_token()}"}


def authed_post(client: TestClient, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """POST with a valid token; the status and the JSON answer."""
    response = client.post(path, headers=auth_header(), **kwargs)
    return response.status_code, response.json()


def png_bytes(size: tuple[int, int] = (64, 48), color: str = "red", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def running_app(settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    """The real server app with its lifespan running; waits for the background model preload."""
    app = create_app(settings)
    with TestClient(app) as client:
        thread = app.state.api.preload_thread
        if thread is not None:
            thread.join(timeout=120)
        yield app, client


def server_client(settings: Settings) -> TestClient:
    """The whole server (API, docs, chat) around a fresh manager that nothing here loads.

    Use it as a context manager to run the lifespan; the server's shutdown closes the manager.
    """
    return TestClient(create_app(settings, make_services(settings, ModelManager(settings))))


# -- real HTTP servers on 127.0.0.1 ----------------------------------------------------------------------
class QuietHandler(BaseHTTPRequestHandler):
    """A test server's request handler: logs nothing, reads JSON, answers with a sized body."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_json(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def send_body(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer:
    """`handler` served on 127.0.0.1 (a free port) from a daemon thread until `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageServer(LoopbackServer):
    """Serves `/image.png` (declared as text/html: the type must not be trusted), redirects and big bodies."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.hosts_seen: list[str] = []
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.hosts_seen.append(self.headers.get("Host", ""))
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path == "/image.png":
                    self.send_body(200, server.image, "text/html")
                elif url.path == "/redirect":
                    self._redirect(query["to"][0])
                elif url.path.startswith("/loop/"):
                    self._redirect(f"/loop/{int(url.path.rsplit('/', 1)[1]) + 1}")
                elif url.path == "/big":
                    self.send_body(200, b"\0" * int(query["n"][0]), "image/png")
                elif url.path == "/big-unsized":
                    # No Content-Length: the body ends when the connection closes (HTTP/1.0 style).
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"\0" * int(query["n"][0]))
                    self.close_connection = True
                elif url.path == "/missing":
                    self.send_body(404, b"nope", "text/plain")
                else:
                    self.send_body(404, b"", "text/plain")

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler)


def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims `width x height` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
