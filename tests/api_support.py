"""Helpers for the HTTP API tests: settings with auth, tokens, images, and a real loopback server."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.server import create_app

JWT_SECRET = "test-secret-" + "0123456789abcdef" * 4  # 76 bytes: long enough for HS512 too
AUDIENCE = "florence-api"
ISSUER = "https://issuer.test"


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


# -- a real HTTP server on 127.0.0.1 for URL fetching --------------------------------------------------
class ImageServer:
    """Serves `/image.png` (declared as text/html: the type must not be trusted), redirects and big bodies."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.hosts_seen: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hosts_seen.append(self.headers.get("Host", ""))
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path == "/image.png":
                    self._send(200, server.image, "text/html")
                elif url.path == "/redirect":
                    self._redirect(query["to"][0])
                elif url.path.startswith("/loop/"):
                    self._redirect(f"/loop/{int(url.path.rsplit('/', 1)[1]) + 1}")
                elif url.path == "/big":
                    self._send(200, b"\0" * int(query["n"][0]), "image/png")
                elif url.path == "/big-unsized":
                    # No Content-Length: the body ends when the connection closes (HTTP/1.0 style).
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"\0" * int(query["n"][0]))
                    self.close_connection = True
                elif url.path == "/missing":
                    self._send(404, b"nope", "text/plain")
                else:
                    self._send(404, b"", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims `width x height` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
